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
