"""Figures and reports are produced from a small stored run and hold what a reader needs."""

import matplotlib
import pandas as pd
import pytest

from harness.report import plots
from harness.cli.sweep import main
from harness.report.document import _load, _paper_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "quick"
    assert main(["--quick", "--sparsity", "0.5,0.8,0.9", "--out", str(out), "--no-progress"]) == 0
    return out


def test_sweep_writes_report_and_figures(run_dir):
    for name in ("speedup_vs_sparsity", "sweet_spots", "roofline", "model_error", "time_per_method"):
        for ext in ("png", "svg"):
            assert (run_dir / "figures" / f"{name}.{ext}").stat().st_size > 1000
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# Sparse convolution run") and "Best direct sparse speedup" in md
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "<table>" in html


def test_speedup_figure_has_points_curves_and_labels(run_dir):
    d = _load(run_dir)
    fig = plots.speedup_vs_sparsity(d["frame"], d["spots"], d["fit"], _paper_model(d["fit"], d["meta"]))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3  # conv3, conv4, conv5
    for ax in axes:
        labels = [l.get_label() for l in ax.get_lines()]
        assert "fitted model" in labels and "paper model" in labels
        assert ax.get_xlabel().startswith("sparsity") and "speedup" in ax.get_ylabel()
        assert any(isinstance(c, matplotlib.collections.LineCollection) for c in ax.collections)
    legend = axes[0].get_legend()
    assert legend is not None and "measured crossover" in [t.get_text() for t in legend.get_texts()]
    matplotlib.pyplot.close(fig)


def test_roofline_and_model_error(run_dir):
    d = _load(run_dir)
    fig = plots.roofline(d["frame"], d["fit"]["calibration"])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "GFLOP/s" in ax.get_ylabel()
    assert len(ax.collections) >= 3  # dense and sparse methods as point sets
    assert any("DRAM" in l.get_label() for l in ax.get_lines())
    matplotlib.pyplot.close(fig)
    fig = plots.model_error(d["points"])
    assert len(fig.axes) == 2  # the fitted model, and the zero-shot one from the calibration
    assert "Zero-shot" in fig.axes[1].get_title()
    assert all(any(l.get_label() == "y = x" for l in ax.get_lines()) for ax in fig.axes)
    matplotlib.pyplot.close(fig)
    md = (run_dir / "report.md").read_text()
    assert "zero-shot" in md and "zero_shot_crossover" in md


def test_report_regenerates_and_compares(run_dir, tmp_path):
    (run_dir / "figures" / "roofline.png").unlink()
    assert main(["--report", str(run_dir), str(run_dir), "--out", str(tmp_path / "cmp")]) == 0
    assert (run_dir / "figures" / "roofline.png").exists()
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert set(table["layer"]) == {"conv3", "conv4", "conv5"}
    assert (tmp_path / "cmp" / "figures" / "compare_speedup.png").exists()


def test_report_of_missing_run_is_one_line(tmp_path, capsys):
    assert main(["--report", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
