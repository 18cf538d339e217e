"""The tidy results table of a run, its speedups against the best dense baseline, and the
per-layer summary (best speedup, crossover sparsity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.config import NOISY_IQR
from harness.errors import HarnessError
from harness.store.runs import POINTS, RunStore
from harness.kernels import modelled_method
from harness.sweep.record import TABLE_COLUMNS, as_json, from_mapping, table_dtypes


def results_table(rows: list) -> pd.DataFrame:
    """Tidy table, one row per point, with each row's speedup against the fastest correct
    dense baseline measured in the same run for the same layer, batch and threads, at the
    profile's instruction set (rows marked ``uncapped`` are kept but never the baseline). A point
    measured again (resumed under a new build or on another host, which re-measures every
    point) is represented by its latest row; the raw log keeps the earlier ones."""
    records = [r if isinstance(r, dict) else as_json(r) for r in rows]
    frame = pd.DataFrame.from_records(records, columns=TABLE_COLUMNS)
    frame = frame.drop_duplicates("key", keep="last")
    frame = _typed(frame)
    if frame.empty:
        return frame
    group = ["network", "layer", "batch", "threads", "profile", "host"]
    # a dense method that ran above its profile's instruction set is no baseline of it
    dense = frame[(frame["dense"] == True) & (frame["status"] == "ok")  # noqa: E712
                  & (frame["uncapped"] != True)]  # noqa: E712
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


def noise_note(frame: pd.DataFrame) -> str:
    """How many measured points were timed again for noise, and how many stayed noisy."""
    ok = frame[frame["status"] == "ok"]
    noisy = int((ok["noisy"] == True).sum())  # noqa: E712
    again = int((ok["attempts"].fillna(1) > 1).sum()) if "attempts" in ok else 0
    text = (f"{noisy} noisy points (IQR above {NOISY_IQR:.0%} of the median; machine busy?)"
            if noisy else "no noisy points")
    return text + (f"; {again} points timed again for noise" if again else "")


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


def summary_table(frame: pd.DataFrame, method: str | None = None) -> pd.DataFrame:
    """Per layer, weight pattern, batch and threads: best speedup of ``method`` (default: the
    modelled one, the direct kernel) and where it starts to win."""
    method = method or modelled_method()
    sel = frame[(frame["method"] == method) & (frame["status"] == "ok")]
    rows = []
    for (net, layer, pattern, batch, threads), g in sel.groupby(
            ["network", "layer", "pattern", "batch", "threads"], sort=False):
        g = g.dropna(subset=["speedup"])
        if g.empty:
            continue
        best = g.loc[g["speedup"].idxmax()]
        rows.append({"network": net, "layer": layer, "pattern": pattern, "batch": batch,
                     "threads": threads,
                     "best_dense": best["best_dense_method"],
                     "best_speedup": round(float(best["speedup"]), 2),
                     "at_sparsity": round(float(best["sparsity"]), 3),
                     "crossover_sparsity": round(crossover_sparsity(
                         g["sparsity"].to_numpy(), g["speedup"].to_numpy()), 3)})
    return pd.DataFrame(rows)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts as integers and other numbers as floats (missing values as NA and NaN),
    booleans and text as they are."""
    kinds = table_dtypes()
    for col in frame.columns:
        kind = kinds.get(col)
        if kind == "float64":
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
        elif kind == "Int64":
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    return frame


def load_results(run_dir: Path) -> pd.DataFrame:
    """A stored run's results table, rebuilt from its points.jsonl (the durable record), so a
    damaged or stale results.csv never stops a report or a refit."""
    run_dir = Path(run_dir)
    if not (run_dir / POINTS).exists():
        raise HarnessError(f"{run_dir}: no {POINTS} (not a run directory?)")
    store = RunStore(run_dir, validate=from_mapping, readonly=True)
    try:
        return results_table(store.rows())
    finally:
        store.close()
