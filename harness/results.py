"""The tidy results table of a run, its speedups against the best dense baseline, and the
per-layer summary (best speedup, crossover sparsity)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import kernels

TABLE_COLUMNS = [
    "network", "layer", "method", "sparsity", "target_sparsity", "batch", "threads", "status",
    "median_s", "min_s", "iqr_s", "cv", "noisy", "useful_gflops", "effective_gflops",
    "best_dense_method", "best_dense_s", "speedup", "nnz", "dense_flops", "useful_flops",
    "max_error", "error_ratio", "worker", "tuned", "plan_tile_vectors", "plan_out_channel_block",
    "plan_channel_block", "plan_aligned", "plan_tiles_outer", "plan_shared_padding",
    "plan_band_rows", "profile",
    "isa", "emulated", "host", "build_key", "pattern",
    "seed", "in_channels", "height", "width", "out_channels", "kernel", "stride", "padding",
    "dilation", "groups", "repeats", "calls_per_sample", "cold_cache", "reason", "key",
]


def results_table(rows: list[dict]) -> pd.DataFrame:
    """Tidy table, one row per point, with each row's speedup against the fastest correct
    dense baseline measured in the same run for the same layer, batch and threads. A point
    measured again (resumed under a new build or on another host, which re-measures every
    point) is represented by its latest row; the raw log keeps the earlier ones."""
    frame = pd.DataFrame(rows)
    if "key" in frame:
        frame = frame.drop_duplicates("key", keep="last")
    for col in TABLE_COLUMNS:
        if col not in frame:
            frame[col] = np.nan
    frame = frame[TABLE_COLUMNS].copy()
    if frame.empty:
        return frame
    group = ["network", "layer", "batch", "threads", "profile", "host"]
    dense = frame[frame["method"].isin(kernels.DENSE_METHODS) & (frame["status"] == "ok")]
    if not dense.empty:
        best = dense.loc[dense.groupby(group)["median_s"].idxmin(), group + ["method", "median_s"]]
        best = best.rename(columns={"method": "_bdm", "median_s": "_bds"})
        frame = frame.merge(best, on=group, how="left")
        frame["best_dense_method"], frame["best_dense_s"] = frame["_bdm"], frame["_bds"]
        frame = frame.drop(columns=["_bdm", "_bds"])
    ok = frame["status"] == "ok"
    frame["speedup"] = np.where(ok, frame["best_dense_s"] / frame["median_s"], np.nan)
    return frame.sort_values(["network", "layer", "batch", "threads", "method", "sparsity"],
                             kind="stable").reset_index(drop=True)


def crossover_sparsity(sparsity: np.ndarray, speedup: np.ndarray) -> float:
    """Lowest sparsity where the speedup reaches 1, interpolated linearly between measured
    points; NaN when it never does, the lowest measured sparsity when it always does."""
    order = np.argsort(sparsity)
    s, v = np.asarray(sparsity)[order], np.asarray(speedup)[order]
    if len(s) == 0 or not (v >= 1).any():
        return float("nan")
    i = int(np.argmax(v >= 1))
    if i == 0:
        return float(s[0])
    s0, s1, v0, v1 = s[i - 1], s[i], v[i - 1], v[i]
    return float(s0 + (1 - v0) * (s1 - s0) / (v1 - v0))


def summary_table(frame: pd.DataFrame, method: str = "direct_sparse") -> pd.DataFrame:
    """Per layer, batch and threads: best speedup of ``method`` and where it starts to win."""
    sel = frame[(frame["method"] == method) & (frame["status"] == "ok")]
    rows = []
    for (net, layer, batch, threads), g in sel.groupby(["network", "layer", "batch", "threads"],
                                                       sort=False):
        g = g.dropna(subset=["speedup"])
        if g.empty:
            continue
        best = g.loc[g["speedup"].idxmax()]
        rows.append({"network": net, "layer": layer, "batch": batch, "threads": threads,
                     "best_dense": best["best_dense_method"],
                     "best_speedup": round(float(best["speedup"]), 2),
                     "at_sparsity": round(float(best["sparsity"]), 3),
                     "crossover_sparsity": round(crossover_sparsity(
                         g["sparsity"].to_numpy(), g["speedup"].to_numpy()), 3)})
    return pd.DataFrame(rows)
