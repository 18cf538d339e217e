"""The spconv command: every subcommand answers --help with every default, the version names
the kernel build, and python -m harness is the same command."""

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from harness import __version__
from harness.cli import COMMANDS, main as spconv
from harness.machine.build import build_key
from harness.machine.profiles import HOST_PROFILE, build_target, load_profile

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_documents_its_default(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no line wrapping inside "(default: ...)"
    parser = importlib.import_module(f"harness.cli.{command}").build_parser(f"spconv {command}")
    text = parser.format_help()
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in text, \
                f"spconv {command} {action.option_strings[0]} does not show its default"


def test_help_lists_commands_and_each_command_helps(capsys):
    assert spconv(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in COMMANDS)
    with pytest.raises(SystemExit) as exc:
        spconv(["sweep", "--help"])
    assert exc.value.code == 0
    assert "(default: 0.05)" in capsys.readouterr().out  # --min-time


def test_unknown_command_is_one_line(capsys):
    assert spconv(["swep"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_version_names_the_kernel_build(capsys):
    assert spconv(["--version"]) == 0
    out = capsys.readouterr().out
    assert __version__ in out
    assert build_key(build_target(load_profile(HOST_PROFILE))) in out


def test_python_dash_m_harness_is_spconv():
    proc = subprocess.run([sys.executable, "-m", "harness", "--version"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_profile_by_shipped_name_and_unknown_name(tmp_path, capsys):
    assert spconv(["tune", "--profile", "no_such_machine"]) == 2
    err = capsys.readouterr().err
    assert "no_such_machine" in err and "host" in err


def test_tune_stores_a_plan_that_sweeps_then_use(tmp_path, capsys):
    layers = tmp_path / "l.yaml"
    layers.write_text("layers:\n  - {name: t, in_channels: 8, height: 9, width: 9, "
                      "out_channels: 16, kernel: 3, padding: 1}\n")
    assert spconv(["tune", "--profile", "host", "--layer-file", str(layers), "--sparsity", "0.9",
                   "--budget", "4"]) == 0
    assert "the default plan" in capsys.readouterr().out
    assert spconv(["sweep", "--layer-file", str(layers), "--sparsity", "0.9", "--methods",
                   "direct_sparse", "--repeats", "1", "--min-time", "0", "--no-fit",
                   "--no-progress", "--in-process", "--out", str(tmp_path / "r")]) == 0
    import pandas as pd
    assert (pd.read_csv(tmp_path / "r" / "results.csv")["tuned"] == "tuned").all()


def test_predict_writes_sweet_spots_from_calibration_alone(tmp_path, capsys):
    """spconv predict times no sparse kernel: its dense run holds only dense methods, and its
    sweet spots have one row per layer, batch and thread count."""
    import pandas as pd

    layers = tmp_path / "l.yaml"
    layers.write_text("layers:\n  - {name: a, in_channels: 16, height: 12, width: 12, "
                      "out_channels: 32, kernel: 3, padding: 1}\n"
                      "  - {name: b, in_channels: 32, height: 6, width: 6, "
                      "out_channels: 32, kernel: 1}\n"
                      "  - {name: c, in_channels: 32, height: 6, width: 6, "
                      "out_channels: 16, kernel: 1, stride: 2}\n")
    out = tmp_path / "p"
    assert spconv(["predict", "--layer-file", str(layers), "--sparsity", "0.5,0.9",
                   "--out", str(out)]) == 0
    dense = pd.read_csv(out / "dense" / "results.csv")
    assert dense["dense"].astype(bool).all() and (dense["status"] == "ok").all()
    spots = pd.read_csv(out / "sweet_spots.csv")
    assert {"layer", "batch", "threads", "predicted_crossover", "predicted_upper"} <= set(spots)
    assert sorted(spots["layer"]) == ["a", "b", "c"]
    # each layer priced on the kernel a sparsified network runs it with (a strided 1x1 one:
    # the pointwise kernel, which gathers the pixels it reads)
    assert dict(zip(spots["layer"], spots["kernel"])) == {
        "a": "direct_sparse", "b": "pointwise_sparse", "c": "pointwise_sparse"}
    points = pd.read_csv(out / "predictions.csv")
    assert len(points) == 6 and (points["predicted_s"] > 0).all()
    for _, g in points.groupby("layer"):  # sparser is faster
        g = g.sort_values("sparsity")
        assert g["predicted_s"].iloc[1] < g["predicted_s"].iloc[0]
    assert "predicted_crossover" in capsys.readouterr().out
    # bad input: one line and status 2, no traceback
    assert spconv(["predict", "--layer-file", str(tmp_path / "none.yaml"), "--out",
                   str(out)]) == 2
