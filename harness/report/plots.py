"""Figures of a run, drawn from its stored results (nothing is re-timed). Each function
returns a matplotlib Figure; ``save`` writes it as PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.conv.weights import is_block  # noqa: E402
from harness.kernels import modelled_method  # noqa: E402
from harness.models.fitted import FittedModel  # noqa: E402
from harness.models.rows import row_spec  # noqa: E402
from harness.models.paper import LayerCost  # noqa: E402

METHOD_STYLE = {
    "direct_sparse": ("#c0392b", "o"), "pointwise_sparse": ("#e67e22", "P"),
    "lowered_sparse": ("#2980b9", "s"),
    "lowered_scipy": ("#8e44ad", "v"), "dense_gemm": ("#7f8c8d", "^"),
    "onednn": ("#27ae60", "D"),
}
plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                     "axes.spines.top": False, "axes.spines.right": False, "font.size": 9})


def save(fig, directory: Path, name: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.{ext}" for ext in ("png", "svg")]
    for p in paths:
        fig.savefig(p, bbox_inches="tight")
    plt.close(fig)
    return paths


def _grid(n: int, width: float = 3.6, height: float = 3.0):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def _direct(frame):
    return frame[(frame["method"] == modelled_method()) & (frame["status"] == "ok")]


def _first_setting(frame):
    """Batch and threads of the first (smallest) setting, for one-panel-per-layer figures."""
    d = _direct(frame)
    if d.empty:
        return 1, 1
    b = int(d["batch"].min())
    return b, int(d[d["batch"] == b]["threads"].min())


def speedup_vs_sparsity(frame: pd.DataFrame, spots: pd.DataFrame | None = None,
                        fit: dict | None = None, paper=None):
    batch, threads = _first_setting(frame)
    d = _direct(frame)
    d = d[(d["batch"] == batch) & (d["threads"] == threads)].dropna(subset=["speedup"])
    layers = list(dict.fromkeys(d["layer"]))
    fig, axes = _grid(max(1, len(layers)))
    model = FittedModel.from_json(fit) if fit else None
    for ax, layer in zip(axes, layers):
        g = d[d["layer"] == layer].sort_values("sparsity")
        # block patterns beside unstructured sparsity: what structure buys on this machine
        blocks = g[g["pattern"].map(is_block).astype(bool)]
        for (pattern, b), marker in zip(blocks.groupby("pattern"), ("s", "^", "D")):
            ax.plot(b["sparsity"], b["speedup"], color="#16a085", marker=marker, ms=4, lw=1,
                    label=f"measured, {pattern}")
        g = g.drop(blocks.index)
        if g.empty:
            g = blocks
        lo = g["best_dense_s"] / (g["median_s"] + g["iqr_s"] / 2)
        hi = g["best_dense_s"] / (g["median_s"] - g["iqr_s"] / 2).clip(lower=1e-12)
        ax.errorbar(g["sparsity"], g["speedup"], yerr=[g["speedup"] - lo, hi - g["speedup"]],
                    fmt="o", color=METHOD_STYLE[modelled_method()][0], ms=4, capsize=2,
                    label="measured (IQR)", zorder=3)
        s = np.linspace(0.0, float(g["sparsity"].max()), 200)
        r0 = g.iloc[0]
        spec = row_spec(r0)
        if model is not None:
            key = (f"{r0['network']}/{layer}", batch, threads)
            # fewer points: each prices the model's plan search at that sparsity (200 took
            # a minute for AlexNet's five layers)
            coarse = s[::5]
            ax.plot(coarse, [model.speedup(spec, x, threads, key) for x in coarse],
                    color="#34495e", lw=1.5, label="fitted model")
        if paper is not None:
            ax.plot(s, [paper.speedup(spec, x) for x in s], color="#e67e22", lw=1.2, ls="--",
                    label="paper model")
        if spots is not None and not spots.empty:
            row = spots[(spots["layer"] == layer) & (spots["batch"] == batch) &
                        (spots["threads"] == threads)]
            if not row.empty:
                r = row.iloc[0]
                if np.isfinite(r["fitted_crossover"]) and np.isfinite(r["fitted_upper"]):
                    ax.axvspan(r["fitted_crossover"], r["fitted_upper"], color="#f1c40f",
                               alpha=0.18, label="predicted sweet spot")
                if np.isfinite(r["measured_crossover"]):
                    ax.axvline(r["measured_crossover"], color="#c0392b", ls=":", lw=1.2,
                               label="measured crossover")
        ax.axhline(1.0, color="black", lw=0.8)
        top = float(np.nanmax(g["speedup"]))
        if top > 10:
            ax.set_yscale("log")
        ax.set_title(f"{r0['network']} {layer}")
        ax.set_xlabel("sparsity (fraction of zero weights)")
        ax.set_ylabel(f"speedup vs best dense ({g['best_dense_method'].iloc[0]})")
        ax.set_xlim(0, 1)
    if layers:
        axes[0].legend(loc="upper left", fontsize=7, framealpha=0.9)
    fig.suptitle(f"Direct sparse convolution speedup, batch {batch}, {threads} thread(s)")
    fig.tight_layout()
    return fig


def sweet_spot_dumbbell(spots: pd.DataFrame):
    spots = spots.reset_index(drop=True)
    labels = [f"{r['layer']} b{r['batch']} t{r['threads']}" for _, r in spots.iterrows()]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(spots) + 1.6))
    y = np.arange(len(spots))
    series = [("measured_crossover", "measured crossover", "#c0392b", "o"),
              ("fitted_crossover", "fitted-model crossover", "#34495e", "s"),
              ("paper_lower", "paper-model lower bound", "#e67e22", "D"),
              ("measured_upper", "measured upper (<10% gain past it)", "#c0392b", "o"),
              ("fitted_upper", "fitted-model upper", "#34495e", "s"),
              ("paper_upper", "paper-model upper bound", "#e67e22", "D")]
    for _, r in spots.iterrows():
        i = _
        ax.plot([r["measured_crossover"], r["fitted_crossover"]], [i, i], color="#bbb", lw=2, zorder=1)
        ax.plot([r["measured_upper"], r["fitted_upper"]], [i, i], color="#bbb", lw=2, zorder=1)
    for col, label, color, marker in series:
        if col in spots:
            hollow = "upper" in col
            ax.scatter(spots[col], y, color="white" if hollow else color, edgecolor=color,
                       marker=marker, s=40, label=label, zorder=3)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("sparsity")
    ax.set_xlim(0, 1)
    ax.set_title("Sweet spots: where sparse starts to win (filled) and stops gaining (hollow)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3)
    fig.tight_layout()
    return fig


def roofline(frame: pd.DataFrame, calibration: dict):
    fig, ax = plt.subplots(figsize=(7, 4.8))
    peak = calibration["fma_gflops_1"]["median"]
    ai = np.logspace(-1, 3, 200)
    ax.plot(ai, np.full_like(ai, peak), color="black", lw=1.5)
    ax.text(ai[0] * 1.2, peak * 1.12, f"FMA peak {peak:.0f} GFLOP/s", ha="left", fontsize=8)
    for level, color in zip(("l1d", "l2", "l3", "dram"), ("#16a085", "#2980b9", "#8e44ad", "#7f8c8d")):
        bw = calibration["triad_gbps_1"].get(level, {}).get("median")
        if bw:
            roof = np.minimum(ai * bw, peak)
            ax.plot(ai, roof, color=color, lw=1, ls="--",
                    label=f"{level.upper()} triad {bw:.0f} GB/s")
    ok = frame[(frame["status"] == "ok") & (frame["threads"] == 1)]
    for method, g in ok.groupby("method"):
        color, marker = METHOD_STYLE.get(method, ("black", "x"))
        xs, ys = [], []
        for _, r in g.iterrows():
            cost = LayerCost.of(row_spec(r))
            b = int(r["batch"])
            if r["dense"] is True:
                flops, traffic = cost.flops, cost.activation_bytes + cost.weight_bytes
                rate = r["effective_gflops"]
            else:
                flops = cost.flops * r["nnz"] / (cost.weight_bytes / 4)
                traffic = cost.activation_bytes + 8 * r["nnz"] / b  # value + index per non-zero
                rate = r["useful_gflops"]
            xs.append(flops / traffic)
            ys.append(rate)
        ax.scatter(xs, ys, color=color, marker=marker, s=18, alpha=0.8,
                   label=f"{method} ({'effective' if method in ('onednn', 'dense_gemm') else 'useful'})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1, peak * 2)
    ax.set_xlabel("arithmetic intensity (FLOP per byte of activations + weights)")
    ax.set_ylabel("GFLOP/s (one thread)")
    ax.set_title("Roofline of this host, calibrated")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def model_error(points: pd.DataFrame):
    """Predicted against measured time of every direct sparse point: the fitted model, and
    beside it the mechanistic model from the calibration alone (zero-shot) where the run has
    its predictions."""
    models = [("predicted_s", "Fitted model")]
    if "zero_shot_s" in points:
        models.append(("zero_shot_s", "Zero-shot (calibration only)"))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.6), squeeze=False)
    for ax, (column, title) in zip(axes[0], models):
        for layer, g in points.groupby("layer"):
            ax.scatter(g["measured_s"] * 1e3, g[column] * 1e3, s=18, label=layer)
        lo = float(min(points["measured_s"].min(), points[column].min())) * 1e3 / 1.3
        hi = float(max(points["measured_s"].max(), points[column].max())) * 1e3 * 1.3
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="y = x")
        ax.fill_between([lo, hi], [lo / 1.1, hi / 1.1], [lo * 1.1, hi * 1.1], color="#bbb",
                        alpha=0.3, label="±10%")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("measured time (ms)")
        ax.set_ylabel("predicted time (ms)")
        ax.set_title(f"{title}: predicted vs measured (direct sparse)", fontsize=9)
    axes[0][0].legend(fontsize=7, ncols=2)
    fig.tight_layout()
    return fig


def time_per_method(frame: pd.DataFrame):
    batch, threads = _first_setting(frame)
    ok = frame[(frame["status"] == "ok") & (frame["batch"] == batch) & (frame["threads"] == threads)]
    layers = list(dict.fromkeys(ok["layer"]))
    fig, axes = _grid(max(1, len(layers)))
    for ax, layer in zip(axes, layers):
        g = ok[ok["layer"] == layer]
        top = float(g["sparsity"].max()) if len(g) else 1.0
        several = g[g["dense"] != True]["pattern"].nunique() > 1  # noqa: E712
        for (method, pattern), m in g.groupby(["method", "pattern"]):
            color, marker = METHOD_STYLE.get(method, ("black", "x"))
            m = m.sort_values("sparsity")
            if m["dense"].iloc[0] is True:  # timed once: its time holds at every sparsity
                ax.hlines(m["median_s"].iloc[0] * 1e3, 0, top, color=color, lw=1.5,
                          label=f"{method} (dense, timed once)")
            else:
                ax.plot(m["sparsity"], m["median_s"] * 1e3, color=color, marker=marker, ms=4,
                        lw=1.2, ls="--" if is_block(pattern) else "-",
                        label=f"{method} {pattern}" if several else method)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_title(layer)
        ax.set_xlabel("sparsity")
        ax.set_ylabel("time per call (ms)")
    if layers:
        axes[0].legend(fontsize=7)
    fig.suptitle(f"Time per method, batch {batch}, {threads} thread(s)")
    fig.tight_layout()
    return fig


def compare_runs(frames: dict[str, pd.DataFrame]):
    """Speedup of direct sparse vs sparsity, one line per run, a panel per layer."""
    layers = list(dict.fromkeys(l for f in frames.values() for l in _direct(f)["layer"]))
    fig, axes = _grid(max(1, len(layers)))
    for ax, layer in zip(axes, layers):
        for label, f in frames.items():
            b, t = _first_setting(f)
            g = _direct(f)
            g = g[(g["layer"] == layer) & (g["batch"] == b) & (g["threads"] == t)].sort_values("sparsity")
            if len(g):
                ax.plot(g["sparsity"], g["speedup"], marker="o", ms=3, label=label)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_title(layer)
        ax.set_xlabel("sparsity")
        ax.set_ylabel("speedup vs best dense")
    if layers:
        axes[0].legend(fontsize=7)
    fig.suptitle("Direct sparse speedup across runs")
    fig.tight_layout()
    return fig
