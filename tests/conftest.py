import os
import tempfile

import numpy as np
import pytest

# Builds, calibrations and tuned plans of a test session go to a cache of its own (inherited
# by the sweeps the tests start), so the tests neither read nor disturb a user's.
os.environ.setdefault("SPCONV_CACHE_DIR", tempfile.mkdtemp(prefix="spconv-test-cache-"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DAMAGED = os.path.join(DATA, "damaged")


@pytest.fixture
def tiny_sweep(tmp_path):
    """Arguments of a sweep small enough to run many times in a test: one small layer, two
    sparsities, direct sparse and dense GEMM, one sample each, in this process."""
    layers = tmp_path / "tiny.yaml"
    layers.write_text("layers:\n  - {name: tiny, in_channels: 8, height: 9, width: 9, "
                      "out_channels: 12, kernel: 3, padding: 1}\n")
    return ["--layer-file", str(layers), "--sparsity", "0.5,0.9", "--methods",
            "direct_sparse,dense_gemm", "--repeats", "1", "--min-time", "0", "--no-progress",
            "--no-fit", "--in-process", "--tune", "off"]
