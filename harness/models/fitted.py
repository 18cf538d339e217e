"""A performance model fitted to a sweep's measurements, its validation and the sweet spots.

Direct sparse time is modelled from what the kernel does (kernels_c/direct.c) per call:
    t = t_fixed + a_pad * padded input floats (per work item) + a_out * output-run floats
        + a_tile * non-zeros x register tiles + (a_fma + d_class) * non-zeros x vectors
        + d_level * non-zeros x vectors [input beyond L2]
all over the batch and divided by the threads. d_class adjusts the vector-FMA cost per layer
class (kernel size and stride), d_level for inputs that do not fit the L2 cache; both are
ridge-penalised so a class or level absent from the data falls back to the shared cost.
Dense time comes from the measured efficiency of the best dense baseline per layer.
Parameters are fitted by least squares on relative error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import lsq_linear

from harness.conv.convspec import ConvSpec
from harness.kernels import modelled_method
from harness.kernels.direct import default_out_block
from harness.machine.isa import isa_table
from harness.sweep.record import plan_of
from harness.conv.sparsity import band_height, direct_layout
from harness.conv.weights import is_block

RIDGE = 1e-2
GAIN_LIMIT = 1.10  # "extra sparsity gains less than 10% speed"


def row_spec(r) -> ConvSpec:
    k = int(r["kernel"])
    return ConvSpec.from_shapes(
        (int(r["batch"]), int(r["in_channels"]), int(r["height"]), int(r["width"])),
        (int(r["out_channels"]), int(r["in_channels"]) // int(r["groups"]), k, k),
        int(r["stride"]), int(r["padding"]), int(r["dilation"]), int(r["groups"]))


def layer_class(r) -> str:
    return f"k{int(r['kernel'])}s{int(r['stride'])}"


def row_plan(r) -> dict:
    """The work_terms() arguments of the plan a stored row ran with ({} when it recorded none:
    the default plan)."""
    plan = plan_of(r)
    if plan is None:
        return {}
    return {"aligned": plan.aligned, "tile": plan.tile_vectors,
            "out_block": plan.out_channel_block, "shared_padding": plan.shared_padding,
            "band_rows": plan.band_rows}


def padded_channels(spec: ConvSpec, out_block: int, shared_padding: bool = False) -> int:
    """Input channels one call pads: every channel once with shared padding, else every work
    item pads the channels of the groups its output channels belong to."""
    if shared_padding:
        return spec.batch * spec.in_channels
    items = -(-spec.out_channels // out_block)
    groups_spanned = min(spec.groups, -(-out_block // (spec.out_channels // spec.groups)))
    return spec.batch * items * spec.in_channels // spec.groups * groups_spanned


def work_terms(spec: ConvSpec, nnz: float, isa: str, threads: int, l2_bytes: float,
               aligned: bool = False, tile: int | None = None,
               out_block: int | None = None, shared_padding: bool = False,
               band_rows: int = 0) -> dict:
    """What one call of the direct kernel does, for the plan it ran with (default plan when
    the plan is unknown). With bands, every band pads its own input rows (halo included) and
    tiles its own run."""
    vec, max_tile = isa_table()[isa].lanes, isa_table()[isa].max_tile
    band = band_height(spec, band_rows)
    bands = -(-spec.out_height // band)
    layout = direct_layout(spec, aligned, vec, band_rows=band_rows)
    plane = layout.plane * layout.copies  # one band's, or the whole image's
    run = -(-spec.out_height * layout.plane_w // vec) * vec
    vectors = run // vec
    band_vectors = -(-band * layout.plane_w // vec)
    tiles = bands * -(-band_vectors // (tile or max_tile))
    out_block = out_block or default_out_block(spec, threads)
    b, t = spec.batch, threads
    fma = b * nnz * vectors / t
    return {"fixed": 1.0,
            "pad": padded_channels(spec, out_block, shared_padding) * bands * plane / t,
            "out": b * spec.out_channels * run / t, "tile": b * nnz * tiles / t, "fma": fma,
            "beyond_l2": fma * float(4 * spec.in_channels * plane > l2_bytes)}


@dataclass
class FittedModel:
    columns: list[str]
    coef: np.ndarray
    dense_gflops: dict       # (layer key, batch, threads) -> measured best dense GFLOP/s
    isa: str
    l2_bytes: float

    def _features(self, spec, nnz, threads, cls, plan=None) -> np.ndarray:
        terms = work_terms(spec, nnz, self.isa, threads, self.l2_bytes, **(plan or {}))
        return np.array([terms.get(c, terms["fma"] if c == f"class:{cls}" else 0.0)
                         for c in self.columns])

    def sparse_time(self, spec: ConvSpec, sparsity: float, threads: int, cls: str) -> float:
        nnz = (1.0 - sparsity) * spec.out_channels * spec.reduction_length
        return float(self._features(spec, nnz, threads, cls) @ self.coef)

    def dense_time(self, spec: ConvSpec, key) -> float:
        gflops = self.dense_gflops.get(key) or float(np.median(list(self.dense_gflops.values())))
        return spec.dense_flops() / (gflops * 1e9)

    def speedup(self, spec, sparsity, threads, cls, key) -> float:
        return self.dense_time(spec, key) / self.sparse_time(spec, sparsity, threads, cls)

    @classmethod
    def from_json(cls, fit: dict) -> "FittedModel":
        """The model saved in a run's model_fit.json."""
        f = fit["fitted"]
        dense = {tuple(int(p) if p.isdigit() else p for p in k.split("|")): v
                 for k, v in f["dense_gflops"].items()}
        return cls(list(f["parameters_s"]), np.array(list(f["parameters_s"].values())),
                   dense, f["isa"], f["l2_bytes"])

    def as_dict(self) -> dict:
        return {"form": __doc__.split("\n\n")[1], "isa": self.isa, "l2_bytes": self.l2_bytes,
                "parameters_s": dict(zip(self.columns, map(float, self.coef))),
                "dense_gflops": {"|".join(map(str, k)): v for k, v in self.dense_gflops.items()}}


def _design(rows: pd.DataFrame, isa: str, l2_bytes: float, classes: list[str]):
    cols = ["fixed", "pad", "out", "tile", "fma", "beyond_l2"] + [f"class:{c}" for c in classes]
    X = np.zeros((len(rows), len(cols)))
    for i, (_, r) in enumerate(rows.iterrows()):
        terms = work_terms(row_spec(r), float(r["nnz"]), isa, int(r["threads"]), l2_bytes,
                           **row_plan(r))
        for j, c in enumerate(cols):
            X[i, j] = terms["fma"] * (layer_class(r) == c[6:]) if c.startswith("class:") else terms[c]
    return cols, X


def _dense_efficiency(frame: pd.DataFrame) -> dict:
    ok = frame[(frame["status"] == "ok") & frame["best_dense_s"].notna()]
    out = {}
    for (net, layer, b, t), g in ok.groupby(["network", "layer", "batch", "threads"]):
        spec = row_spec(g.iloc[0])
        out[(f"{net}/{layer}", int(b), int(t))] = spec.dense_flops() / g["best_dense_s"].iloc[0] / 1e9
    return out


def direct_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The modelled method's correct rows of unstructured sparsity (the block patterns run
    other register tiles and are shown beside them, not fitted)."""
    patterns = frame["pattern"] if "pattern" in frame else pd.Series("random", frame.index)
    unstructured = ~patterns.map(is_block).astype(bool)
    return frame[(frame["method"] == modelled_method()) & (frame["status"] == "ok")
                 & unstructured].copy()


def fit_model(frame: pd.DataFrame, isa: str, l2_bytes: float) -> FittedModel:
    rows = direct_rows(frame)
    if len(rows) < 3:
        raise ValueError("too few direct_sparse points to fit (need 3)")
    classes = sorted({layer_class(r) for _, r in rows.iterrows()})
    cols, X = _design(rows, isa, l2_bytes, classes)
    y = rows["median_s"].to_numpy()
    Xw, yw = X / y[:, None], np.ones_like(y)  # relative error
    scale = np.abs(Xw).max(axis=0)
    scale[scale == 0] = 1.0
    Xs = Xw / scale
    penalised = [j for j, c in enumerate(cols) if c.startswith("class:") or c == "beyond_l2"]
    A = np.vstack([Xs, np.sqrt(RIDGE) * np.eye(len(cols))[penalised]])
    b = np.concatenate([yw, np.zeros(len(penalised))])
    # Costs of real work are non-negative; class adjustments may go either way.
    lower = np.array([-np.inf if c.startswith("class:") else 0.0 for c in cols])
    coef = lsq_linear(A, b, bounds=(lower, np.inf)).x / scale
    return FittedModel(cols, coef, _dense_efficiency(frame), isa, l2_bytes)


def predict_rows(model: FittedModel, rows: pd.DataFrame) -> np.ndarray:
    return np.array([float(model._features(row_spec(r), float(r["nnz"]), int(r["threads"]),
                                           layer_class(r), row_plan(r)) @ model.coef)
                     for _, r in rows.iterrows()])


def validate(frame: pd.DataFrame, isa: str, l2_bytes: float) -> dict:
    """Fit on all points, and leave each layer out in turn: relative errors of time."""
    rows = direct_rows(frame)
    model = fit_model(frame, isa, l2_bytes)
    rel = np.abs(predict_rows(model, rows) / rows["median_s"].to_numpy() - 1)
    lolo = {}
    for layer, g in rows.groupby("layer"):
        rest = frame[~((frame["method"] == modelled_method()) & (frame["layer"] == layer))]
        if len(direct_rows(rest)) < 3:
            continue
        held = fit_model(rest, isa, l2_bytes)
        err = np.abs(predict_rows(held, g) / g["median_s"].to_numpy() - 1)
        lolo[layer] = {"median": float(np.median(err)), "worst": float(err.max())}
    return {"model": model, "points": pd.DataFrame({
        "layer": rows["layer"].to_numpy(), "sparsity": rows["sparsity"].to_numpy(),
        "batch": rows["batch"].to_numpy(), "threads": rows["threads"].to_numpy(),
        "measured_s": rows["median_s"].to_numpy(), "predicted_s": predict_rows(model, rows)}),
        "median_rel_error": float(np.median(rel)), "worst_rel_error": float(rel.max()),
        "leave_one_layer_out": lolo,
        "worst_lolo_median": max((v["median"] for v in lolo.values()), default=float("nan"))}


def crossing(f, lo: float, hi: float, target: float) -> float:
    """Smallest s in [lo, hi] with f(s) >= target for increasing f (bisection); NaN if none."""
    if f(hi) < target:
        return float("nan")
    if f(lo) >= target:
        return lo
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return hi


def measured_upper(s: np.ndarray, v: np.ndarray) -> float:
    """Sparsity past which the measured speedup gains less than 10% up to the top of the grid."""
    order = np.argsort(s)
    s, v = s[order], v[order]
    top = v[-1]
    for i in range(len(s)):
        if top / v[i] < GAIN_LIMIT:
            if i == 0:
                return float(s[0])
            # interpolate where v reaches top / GAIN_LIMIT
            goal = top / GAIN_LIMIT
            return float(s[i - 1] + (goal - v[i - 1]) * (s[i] - s[i - 1]) / (v[i] - v[i - 1]))
    return float(s[-1])
