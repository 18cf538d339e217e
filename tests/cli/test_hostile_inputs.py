"""Options and inputs are checked before anything runs: a failure is one line naming the
option or file, with exit status 2. Resumed runs never mix points of different settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DAMAGED
from harness import config
from harness.cli import sweep as sweep_cli
from harness.cli.sweep import main as sweep, resume_command
from harness.conv.layers import LayerShape
from harness.sweep.plan import SweepPoint

REPO = Path(__file__).resolve().parents[2]


def one_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("option, value", [
    ("--sparsity", "0:0.9:1e-13"), ("--sparsity", "0:0.9:1e-7"), ("--sparsity", "0:nan:0.1"),
    ("--point-timeout", "nan"), ("--point-timeout", "0"), ("--point-timeout", "-1"),
    ("--min-time", "nan"), ("--min-time", "inf"), ("--repeats", "0"), ("--max-points", "0"),
    ("--threads", "0"), ("--batch", "-1"), ("--tune-budget", "0"), ("--seed", "-3"),
])
def test_bad_options_are_one_line_and_exit_2(option, value, tiny_sweep, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        code = sweep([*tiny_sweep, option, value, "--out", str(tmp_path / "r")])
        raise SystemExit(code)
    assert exc.value.code == 2
    one_line(capsys, option)
    assert not (tmp_path / "r").exists()


def test_too_many_points_need_max_points(tiny_sweep, tmp_path, capsys):
    args = [*tiny_sweep, "--sparsity", "0:0.99:0.001", "--max-points", "500",
            "--out", str(tmp_path / "r")]
    assert sweep(args) == 2
    one_line(capsys, "--max-points")


@pytest.mark.parametrize("name, needle", [
    ("duplicate_layers.yaml", "second layer named 'a'"), ("zero_groups.yaml", "groups"),
    ("terabyte_layer.yaml", "GiB"),
])
def test_bad_layer_files(name, needle, tmp_path, capsys):
    assert sweep(["--layer-file", str(Path(DAMAGED) / name), "--out", str(tmp_path / "r"),
                  "--no-progress"]) == 2
    one_line(capsys, name, needle)


def test_corrupt_weight_file(tiny_sweep, tmp_path, capsys):
    assert sweep([*tiny_sweep, "--weights", str(Path(DAMAGED) / "corrupt.npz"),
                  "--out", str(tmp_path / "r")]) == 2
    one_line(capsys, "corrupt.npz", "not a readable .npz")


def test_profile_flags_that_run_programs_are_refused(tiny_sweep, tmp_path, capsys):
    os.chdir(tmp_path)
    assert sweep([*tiny_sweep, "--profile", str(Path(DAMAGED) / "profile_wrapper.yaml"),
                  "--out", str(tmp_path / "r")]) == 2
    one_line(capsys, "-wrapper", "--trust-profile")
    assert not (tmp_path / "PWNED").exists()


def test_profile_name_stays_inside_results(tiny_sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(config, "RESULTS_ROOT", str(tmp_path / "results"))
    assert sweep([*tiny_sweep, "--profile",
                  str(Path(DAMAGED) / "profile_escaping_name.yaml")]) == 2
    one_line(capsys, "name")
    assert not list(tmp_path.rglob("escaped*"))


def test_compiler_writing_nothing_leaves_no_run_directory(tiny_sweep, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.setattr(config, "RESULTS_ROOT", str(tmp_path / "results"))
    assert sweep([*tiny_sweep, "--profile",
                  str(Path(DAMAGED) / "profile_no_output_compiler.yaml")]) == 2
    one_line(capsys, "without writing the kernels")
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").iterdir())


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_unusable_cache_directory(kind, tmp_path, tiny_sweep):
    cache = tmp_path / "cache"
    if kind == "file":
        cache.write_text("not a directory")
    else:
        cache.mkdir()
        cache.chmod(0o500)
        if os.access(cache, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
    proc = subprocess.run([sys.executable, str(REPO / "run_sweep.py"), *tiny_sweep, "--out",
                           str(tmp_path / "r")], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "SPCONV_CACHE_DIR": str(cache)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cache) in lines[0], proc.stderr


def test_missing_scheduler_file(tiny_sweep, tmp_path, capsys):
    pytest.importorskip("distributed")
    args = [a for a in tiny_sweep if a != "--in-process"]
    assert sweep([*args, "--scheduler-file", str(tmp_path / "none.json"),
                  "--out", str(tmp_path / "r")]) == 2
    one_line(capsys, "--scheduler-file", "no such file")


def test_resume_with_other_settings_is_refused(tiny_sweep, tmp_path, capsys):
    out = tmp_path / "run"
    assert sweep([*tiny_sweep, "--out", str(out)]) == 0
    capsys.readouterr()
    assert sweep([*tiny_sweep, "--out", str(out), "--resume", "--sparsity", "0.3"]) == 2
    one_line(capsys, "other settings", "sparsities")
    layer_file = Path(tiny_sweep[tiny_sweep.index("--layer-file") + 1])
    layer_file.write_text(layer_file.read_text().replace("height: 9", "height: 11"))
    assert sweep([*tiny_sweep, "--out", str(out), "--resume"]) == 2
    one_line(capsys, "other settings", "layers")


def test_resume_picks_the_latest_run_of_exactly_this_profile(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "RESULTS_ROOT", str(tmp_path))
    runs = {}
    for i, name in enumerate(["host-20261201-000000", "host-avx2-20261201-000001",
                              "host-20261201-000002", "hostile-20261201-000003"]):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        os.utime(runs[name], (1000 + i, 1000 + i))
    (runs["host-20261201-000000"] / "points.jsonl").write_text("")
    (runs["host-avx2-20261201-000001"] / "points.jsonl").write_text("")
    # host-20261201-000002 is empty: a start that failed before measuring anything
    os.utime(runs["host-20261201-000000"], (1000, 1000))
    assert sweep_cli._latest_run("host") == runs["host-20261201-000000"]
    assert sweep_cli._latest_run("host-avx2") == runs["host-avx2-20261201-000001"]


def test_resume_command_keeps_the_options():
    argv = ["spconv sweep", "--layers", "conv5", "--sparsity", "0.5", "--out", "old", "--resume"]
    assert resume_command(argv, Path("runs/x")) == \
        "spconv sweep --layers conv5 --sparsity 0.5 --out runs/x --resume"
    assert resume_command(["run_sweep.py", "--quick"], Path("r")) == \
        "python run_sweep.py --quick --out r --resume"


GEOMETRY = ("in_channels", "height", "width", "out_channels", "kernel", "stride", "padding",
            "dilation", "groups")


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(GEOMETRY), delta=st.integers(1, 5),
       sparsity=st.floats(0, 0.99), batch=st.integers(1, 64), threads=st.integers(1, 64))
def test_point_keys_hold_the_geometry(field, delta, sparsity, batch, threads):
    layer = LayerShape("net", "a", 8, 9, 9, 12, 3, 1, 1)
    edited = LayerShape(**{**layer.as_dict(), field: getattr(layer, field) + delta})
    point = SweepPoint(layer, sparsity, "direct_sparse", batch, threads, "random", 0)
    same = SweepPoint(LayerShape(**layer.as_dict()), sparsity, "direct_sparse", batch, threads,
                      "random", 0)
    moved = SweepPoint(edited, sparsity, "direct_sparse", batch, threads, "random", 0)
    assert point.key == same.key and point.key != moved.key


@pytest.mark.parametrize("args, needle", [
    (["--sparsity", "2"], "sparsity must be in [0, 1)"),
    (["--layers", "conv9"], "no AlexNet layer 'conv9'"),
])
def test_bench_scripts_refuse_bad_input(args, needle):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "alexnet_90.py"), *args,
                           "--tune", "off", "--rounds", "1"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("script", ["out_block.py", "pointwise_model.py", "branch_counts.py"])
@pytest.mark.parametrize("sparsity, needle", [("0.5,2", "sparsity must be in [0, 1)"),
                                              ("half", "not a list of numbers")])
def test_bench_scripts_refuse_bad_sparsities(script, sparsity, needle):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--sparsity", sparsity],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("script, args, needle", [
    ("direct_store.py", ["--sparsity", "2"], "sparsity must be in [0, 1)"),
    ("direct_store.py", ["--network", "nonesuch"], "nonesuch"),
    ("direct_store.py", ["--threads", "0"], "--threads and --batch must be at least 1"),
    ("gsl_retime.py", ["tests"], "is not a finished GSL run"),
])
def test_store_and_retime_benches_refuse_bad_input(script, args, needle):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--layer", "alexnet:conv9"], "alexnet has no layer 'conv9'"),
    (["--layer", "alexnet:conv2"], "has 2 groups"),
    (["--layer", "alexnet:conv3", "--pointwise"], "not a 1x1 layer"),
])
def test_branch_counts_refuses_layers_it_cannot_time(args, needle):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "branch_counts.py"), *args],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--width", "0"], "--width"), (["--train-subset", "0"], "--train-subset"),
    (["--train-subset", "-5"], "--train-subset"),
])
def test_gsl_refuses_bad_options(args, needle, capsys):
    from harness.cli.gsl import main as gsl
    with pytest.raises(SystemExit) as exc:
        gsl([*args, "--dataset", "synthetic"])
    assert exc.value.code == 2
    one_line(capsys, needle)


def test_gsl_refuses_bad_files(tmp_path, capsys):
    pytest.importorskip("torch")
    from harness.cli.gsl import main as gsl
    from harness.gsl.datasets import FILES
    data = tmp_path / "data"
    data.mkdir()
    for stem in FILES.values():
        (data / stem).write_bytes((Path(DAMAGED) / "truncated_idx.idx").read_bytes())
    assert gsl(["--data", str(data), "--out", str(tmp_path / "a")]) == 2
    one_line(capsys, "idx")
    assert gsl(["--dataset", "synthetic", "--checkpoint",
                str(Path(DAMAGED) / "garbage_checkpoint.pt"), "--out", str(tmp_path / "b"),
                "--no-compare", "--prune-epochs", "1", "--finetune-epochs", "0"]) == 2
    one_line(capsys, "garbage_checkpoint.pt")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    assert gsl(["--dataset", "synthetic", "--out", str(blocked / "run")]) == 2
    one_line(capsys, str(blocked))
