"""Sweeps of a profile below the host's level run oneDNN and OpenBLAS capped in their worker
(checked through the libraries' own reports), mark what could not be capped, and never let a
cap reach a sweep of another profile."""

import pandas as pd
import pytest

from harness import kernels
from harness.cli.sweep import main as sweep
from harness.machine.caps import CAP_VARS, dense_caps
from harness.machine.hostinfo import detect_host
from harness.machine.isa import wider
from harness.machine.profiles import PROFILE_DIR, build_target, load_profile

ATOM = PROFILE_DIR / "atom_c2750.yaml"
ARGS = ["--layers", "conv5", "--sparsity", "0.9", "--repeats", "1", "--min-time", "0",
        "--no-progress", "--no-fit", "--tune", "off"]


def methods():
    optional = [m for m in ("onednn", "onnxruntime") if kernels.METHODS[m].available()]
    return ",".join(["direct_sparse", "dense_gemm", *optional])


@pytest.fixture(scope="module")
def atom_caps():
    host = detect_host()
    caps = dense_caps(build_target(load_profile(ATOM, host=host), host=host), host)
    if not caps.active:
        pytest.skip("this host's own level is SSE4.2: nothing to cap")
    return caps


def test_worker_caps_dense_libraries_and_they_do_not_leak(atom_caps, tmp_path, monkeypatch):
    for var in CAP_VARS:  # a cap the user set (OPENBLAS_CORETYPE often is) is theirs, not a leak
        monkeypatch.delenv(var, raising=False)
    assert sweep([*ARGS, "--profile", str(ATOM), "--methods", methods(),
                  "--out", str(tmp_path / "atom")]) == 0
    assert sweep([*ARGS, "--profile", "host", "--methods", methods(),
                  "--out", str(tmp_path / "host")]) == 0
    atom = pd.read_csv(tmp_path / "atom" / "results.csv").set_index("method")
    host = pd.read_csv(tmp_path / "host" / "results.csv").set_index("method")
    for method in ("dense_gemm", "onednn"):
        if method not in atom.index:
            continue
        assert atom.loc[method, "ran_isa"] == "sse4.2", method  # the library's own report
        assert not atom.loc[method, "uncapped"]
        assert atom_caps.describe().split()[0] in atom.loc[method, "caps"]
        assert host.loc[method, "ran_isa"] != "sse4.2" and pd.isna(host.loc[method, "caps"])
    if "onnxruntime" in atom.index:  # it has no cap: kept, marked, never the baseline
        assert atom.loc["onnxruntime", "uncapped"] and not host.loc["onnxruntime", "uncapped"]
        assert atom.loc["direct_sparse", "best_dense_method"] != "onnxruntime"
    assert atom.loc["direct_sparse", "emulated"] and not host.loc["direct_sparse", "emulated"]
    assert "memory" in atom.loc["direct_sparse", "not_reproduced"]
    assert atom.loc["direct_sparse", "best_dense_method"] in ("dense_gemm", "onednn")


def test_in_process_dense_rows_are_marked_uncapped_and_no_baseline(atom_caps, tmp_path, capsys):
    assert sweep([*ARGS, "--profile", str(ATOM), "--methods", methods(), "--in-process",
                  "--out", str(tmp_path / "r")]) == 0
    assert "marked uncapped" in capsys.readouterr().err
    t = pd.read_csv(tmp_path / "r" / "results.csv").set_index("method")
    dense = t[t["dense"] == True]  # noqa: E712
    assert dense["uncapped"].all()
    assert all(wider(level, "sse4.2") for level in dense["ran_isa"])
    assert pd.isna(t.loc["direct_sparse", "best_dense_method"])
    assert pd.isna(t.loc["direct_sparse", "speedup"])
