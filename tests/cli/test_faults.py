"""A sweep survives crashing and hanging kernels, kills, interrupts, concurrent runs and bad
input, and loses nothing it finished."""

import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import kernels
from harness.conv.layers import network_layers
from harness.cli.sweep import main
from harness.conv.convspec import ConvSpec
from harness.conv.sparsity import block_major, direct_csr, direct_layout, random_sparse_weights
from harness.store.runs import RunStore
from harness.conv.verify import expected_output, verify

REPO = Path(__file__).resolve().parents[2]
PLUGIN_ENV = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "plugins")}
BASE = ["--sparsity", "0.5,0.9", "--repeats", "1", "--min-time", "0", "--no-progress", "--no-fit"]


def sweep(*args, env=PLUGIN_ENV, **kw):
    return subprocess.run([sys.executable, str(REPO / "run_sweep.py"), *args], cwd=REPO,
                          capture_output=True, text=True, env=env, **kw)


def test_segfault_in_one_point_spares_the_others(tmp_path):
    env = {**PLUGIN_ENV, "FAULTY_LAYER": "384"}  # conv4 and conv5 have 384 input channels
    proc = sweep("--layers", "conv3,conv4", "--plugin", "faulty_methods", "--methods",
                 "direct_sparse,segfault,dense_gemm", "--out", str(tmp_path / "r"), *BASE, env=env)
    assert proc.returncode == 0, proc.stderr
    t = pd.read_csv(tmp_path / "r" / "results.csv")
    crashed = t[(t["method"] == "segfault") & (t["layer"] == "conv4")]
    assert len(crashed) == 2 and (crashed["status"] == "runtime_error").all()
    assert crashed["reason"].str.contains("SIGSEGV").all()
    others = t[~t.index.isin(crashed.index)]
    assert len(others) == len(t) - 2 and (others["status"] == "ok").all()
    assert others.loc[others["method"] == "direct_sparse", "speedup"].notna().all()


def test_illegal_instruction_and_hang_are_recorded(tmp_path):
    proc = sweep("--layers", "conv5", "--sparsity", "0.9", "--plugin", "faulty_methods",
                 "--methods", "sigill,hang,direct_sparse", "--point-timeout", "20",
                 "--repeats", "1", "--min-time", "0", "--no-progress", "--no-fit",
                 "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    t = pd.read_csv(tmp_path / "r" / "results.csv").set_index("method")
    assert "SIGILL" in t.loc["sigill", "reason"]
    assert "timed out" in t.loc["hang", "reason"]
    assert t.loc["direct_sparse", "status"] == "ok"


def keys_and_status(run):
    t = pd.read_csv(run / "results.csv")
    return sorted(zip(t["key"], t["status"]))


def test_random_sigkills_then_resume_match_an_uninterrupted_run(tmp_path):
    args = ["--layers", "conv4,conv5", "--sparsity", "0.6,0.7,0.8,0.9", "--methods",
            "direct_sparse,lowered_sparse,dense_gemm", "--repeats", "2", "--min-time", "0.005",
            "--no-progress", "--no-fit", "--noisy-retries", "0"]  # no row timed again
    reference = tmp_path / "reference"
    assert sweep(*args, "--out", str(reference)).returncode == 0
    run = tmp_path / "killed"
    rng = random.Random(3)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, str(REPO / "run_sweep.py"), *args, "--out",
                                 str(run), "--resume"], cwd=REPO, env=PLUGIN_ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))
        proc.kill()  # SIGKILL
        proc.wait()
    final = sweep(*args, "--out", str(run), "--resume")
    assert final.returncode == 0, final.stderr
    assert keys_and_status(run) == keys_and_status(reference)
    rows = RunStore(run).rows()
    assert len(rows) == len({r["key"] for r in rows})  # every point exactly once


def test_sigint_stops_after_the_point_in_flight(tmp_path):
    run = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, str(REPO / "run_sweep.py"), "--layers",
                             "conv3,conv4,conv5", "--sparsity", "0.5,0.6,0.7,0.8,0.9",
                             "--repeats", "3", "--min-time", "0.01", "--no-progress", "--no-fit",
                             "--out", str(run)], cwd=REPO, env=PLUGIN_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "points.jsonl").exists():
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "--resume" in err
    table = pd.read_csv(run / "results.csv")
    conv3 = network_layers("alexnet")[2].spec(1)  # conv3-5 share what applies to them
    methods = [m for m in kernels.default_methods() if kernels.METHODS[m].applies(conv3)]
    dense = sum(kernels.METHODS[m].dense for m in methods)
    total = 3 * (5 * (len(methods) - dense) + dense)  # dense methods are timed once a layer
    assert 0 < len(table) < total and (table["status"] == "ok").all()
    # the printed command continues this very run: same options, the missing points only
    command = err.split("Resume with: ")[1].strip()
    assert "--sparsity 0.5,0.6,0.7,0.8,0.9" in command and "--layers conv3,conv4,conv5" in command
    words = shlex.split(command)
    assert words[:2] == ["python", "run_sweep.py"]
    resumed = subprocess.run([sys.executable, str(REPO / "run_sweep.py"), *words[2:]], cwd=REPO,
                             env=PLUGIN_ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{total - len(table)} of {total} points" in resumed.stderr
    assert len(pd.read_csv(run / "results.csv")) == total


def test_concurrent_sweeps(tmp_path):
    args = ["--layers", "conv5", *BASE, "--methods", "direct_sparse,dense_gemm"]
    a = subprocess.Popen([sys.executable, str(REPO / "run_sweep.py"), *args, "--out",
                          str(tmp_path / "a")], cwd=REPO, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen([sys.executable, str(REPO / "run_sweep.py"), *args, "--out",
                          str(tmp_path / "b")], cwd=REPO, stderr=subprocess.PIPE, text=True)
    assert a.wait(300) == 0 and b.wait(300) == 0
    for run in ("a", "b"):
        assert (pd.read_csv(tmp_path / run / "results.csv")["status"] == "ok").all()
    holder = RunStore(tmp_path / "c")  # a sweep holding the directory
    try:
        proc = sweep(*args, "--out", str(tmp_path / "c"), "--resume")
        assert proc.returncode == 2 and "in use by another sweep" in proc.stderr
    finally:
        holder.close()


LAYER_FILES = {
    "wrong_type.yaml": "layers:\n  - {name: a, in_channels: four, height: 8, width: 8, out_channels: 6, kernel: 3}\n",
    "missing.yaml": "layers:\n  - {name: a, in_channels: 4, height: 8, width: 8, kernel: 3}\n",
    "huge.yaml": "layers:\n  - {name: a, in_channels: 99999999999, height: 8, width: 8, out_channels: 6, kernel: 3}\n",
    "negative.yaml": "layers:\n  - {name: a, in_channels: 4, height: -8, width: 8, out_channels: 6, kernel: 3}\n",
    "unknown_key.yaml": "layers:\n  - {name: a, in_channels: 4, height: 8, width: 8, out_channels: 6, kernel: 3, colour: red}\n",
    "empty_output.yaml": "layers:\n  - {name: a, in_channels: 4, height: 2, width: 2, out_channels: 6, kernel: 5}\n",
    "zero_stride.yaml": "layers:\n  - {name: a, in_channels: 4, height: 8, width: 8, out_channels: 6, kernel: 3, stride: 0}\n",
    "bad_groups.yaml": "layers:\n  - {name: a, in_channels: 4, height: 8, width: 8, out_channels: 6, kernel: 3, groups: 3}\n",
    "no_layers.yaml": "network: x\n",
    "syntax.yaml": "layers: [\n",
}


@pytest.mark.parametrize("name", sorted(LAYER_FILES) + ["not_utf8.yaml", "absent.yaml"])
def test_bad_layer_files_exit_2(name, tmp_path, capsys):
    path = tmp_path / name
    if name == "not_utf8.yaml":
        path.write_bytes(b"layers:\n  - {name: \xff\xfe}\n")
    elif name in LAYER_FILES:
        path.write_text(LAYER_FILES[name])
    assert main(["--layer-file", str(path), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_unwritable_results_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["--out", str(blocker / "run"), "--layers", "conv5", *BASE]) == 2
    assert "cannot write results" in capsys.readouterr().err


def test_full_disk_keeps_finished_rows(tmp_path, monkeypatch, capsys):
    import harness.store.runs as store_mod
    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(store_mod.os, "fsync", failing_fsync)
    out = tmp_path / "r"
    assert main(["--out", str(out), "--layers", "conv5", *BASE, "--in-process"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.setattr(store_mod.os, "fsync", real_fsync)
    assert len(RunStore(out).rows()) >= 2  # what was flushed before the failure is intact


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_property_direct_matches_reference(data):
    groups = data.draw(st.sampled_from([1, 2]))
    cg, mg = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    padding = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    h = dilation[0] * (kh - 1) + 1 + data.draw(st.integers(0, 12))
    w = dilation[1] * (kw - 1) + 1 + data.draw(st.integers(0, 20))
    density = data.draw(st.floats(0.0, 1.0))
    aligned = data.draw(st.booleans())
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    spec = ConvSpec.from_shapes((data.draw(st.integers(1, 3)), groups * cg, h, w),
                                (groups * mg, cg, kh, kw), stride, padding, dilation, groups)
    x = rng.standard_normal(spec.input_shape).astype(np.float32)
    wt = random_sparse_weights(spec.weight_shape, min(1 - density, 0.999999), rng)
    plan = kernels.DirectPlan(data.draw(st.integers(1, 8)), data.draw(st.integers(1, 6)),
                              data.draw(st.integers(1, 5)), aligned, data.draw(st.booleans()),
                              data.draw(st.booleans()))
    k = kernels.prepare(wt, input_shape=spec.input_shape, stride=stride, padding=padding,
                        dilation=dilation, groups=groups, plan=plan,
                        threads=data.draw(st.integers(1, 3)))
    out = np.full(spec.output_shape, np.nan, np.float32)
    k(x, out=out)
    assert verify(out, expected_output(x, wt, None, spec, False)).ok


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_property_csr_round_trip(data):
    """Every non-zero's offset decodes back to its (channel in its block, row, column), and
    the block-major regrouping puts it in its own block's segment: the kernel's form is exact."""
    groups = data.draw(st.sampled_from([1, 2, 3]))
    cg, mg = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    stride = data.draw(st.integers(1, 3))
    aligned = data.draw(st.booleans())
    spec = ConvSpec.from_shapes((1, groups * cg, kh + 5, kw + 6), (groups * mg, cg, kh, kw),
                                stride, 1, 1, groups)
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    w = random_sparse_weights(spec.weight_shape, data.draw(st.floats(0, 0.99)), rng)
    block = data.draw(st.integers(1, spec.in_channels))
    layout = direct_layout(spec, aligned, 16, block)
    blocked = block_major(direct_csr(w, spec, layout), spec, block)
    decoded = np.zeros_like(w)
    for b, m in np.ndindex(blocked.blkptr.shape[0], spec.out_channels):
        for j in range(blocked.blkptr[b, m], blocked.blkptr[b, m + 1]):
            off = int(blocked.colidx[j])
            block_start = b * block
            if layout.aligned:
                s, rest = divmod(off, layout.copy_floats)
                c, rest = divmod(rest, layout.plane)
                r = rest // layout.plane_w
            else:
                c, rest = divmod(off, layout.plane)
                phase, rest = divmod(rest, layout.plane_h * layout.plane_w)
                row, col = divmod(rest, layout.plane_w)
                r = row * stride + phase // stride
                s = col * stride + phase % stride
            decoded[m, block_start + c - (m // mg) * cg, r, s] = blocked.values[j]
    np.testing.assert_array_equal(decoded, w)


def test_worker_gets_every_cpu_of_the_sweep(tmp_path):
    """OpenMP binds the driver's main thread to one core; the worker must not inherit that."""
    threads = min(2, len(os.sched_getaffinity(0)))
    proc = sweep("--layers", "conv5", "--sparsity", "0.9", "--plugin", "probe_methods",
                 "--methods", "affinity_probe", "--threads", str(threads), "--repeats", "1",
                 "--min-time", "0", "--no-progress", "--no-fit", "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    rows = RunStore(tmp_path / "r").rows()
    assert len(rows[0]["details"]["affinity"]) == threads


def test_worker_cpus_survive_openmp_in_the_driver(tmp_path):
    """A driver that ran OpenMP code before the sweep (calibration, say) still hands the
    worker every CPU."""
    threads = min(2, len(os.sched_getaffinity(0)))
    code = ("import sys; from harness.kernels.native import host_kernels; "
            "host_kernels().lib.spconv_fma_loop(1000, 2); from harness.cli.sweep import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "--layers", "conv5", "--sparsity", "0.9",
                           "--plugin", "probe_methods", "--methods", "affinity_probe",
                           "--threads", str(threads), "--repeats", "1", "--min-time", "0",
                           "--no-progress", "--no-fit", "--out", str(tmp_path / "r")],
                          cwd=REPO, env={**PLUGIN_ENV, "OMP_PROC_BIND": "close",
                                         "OMP_PLACES": "cores"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(RunStore(tmp_path / "r").rows()[0]["details"]["affinity"]) == threads
