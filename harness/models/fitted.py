"""The mechanistic model refined on a sweep: its parts' weights fitted to the measurements.

The mechanistic model (harness.models.mechanistic) splits a call of the direct kernel into
register-tile work (aligned loads), the extra cost of loads that straddle cache lines, blocks
read into L1 again tile by tile, padding, accumulator, output and non-zero traffic, and the
call's overhead, each priced by the calibration. The fitted model scales each part by a weight
of its own:
    t = w_tiles * tiles + w_split * split loads + w_reload * reloads + w_padding * padding
        + w_memory * (accumulators + stores + non-zeros) + w_call * call
fitted by least squares on relative error, with a ridge pulling every weight towards 1 (the
calibration's own price), so a part the sweep barely exercises keeps its calibrated cost.
Dense time comes from the measured efficiency of the best dense baseline per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import lsq_linear

from harness.conv.convspec import ConvSpec
from harness.models.mechanistic import KernelCosts, direct_time, plan_for
from harness.models.plan_choice import model_plan
from harness.models.rows import direct_rows, layer_class, row_density, row_spec
from harness.sweep.record import plan_of

RIDGE = 0.05   # pull of each weight towards its calibrated value of 1
PARTS = {"tiles": ("tiles_s",), "split_loads": ("split_loads_s",), "reloads": ("reloads_s",),
         "padding": ("padding_s",), "memory": ("accumulators_s", "stores_s", "weights_s"),
         "call": ("call_s",)}


def parts(costs: KernelCosts, spec: ConvSpec, density: float, threads: int, plan=None,
          pattern: str = "random") -> np.ndarray:
    """The mechanistic model's parts of one call, in the order of PARTS."""
    t = direct_time(costs, spec, density, plan_for(spec, costs.max_tile, threads, plan),
                    threads, pattern)
    return np.array([sum(t[k] for k in keys) for keys in PARTS.values()])


def row_parts(costs: KernelCosts, r) -> np.ndarray:
    spec = row_spec(r)
    return parts(costs, spec, row_density(r, spec), int(r["threads"]), plan_of(r),
                 str(r.get("pattern", "random")))


@dataclass
class FittedModel:
    weights: np.ndarray      # one per PARTS entry
    dense_gflops: dict       # (layer key, batch, threads) -> measured best dense GFLOP/s
    costs: KernelCosts
    # the sweep's untuned points ran the model's plans (harness.models.plan_choice), not the
    # default plan: its curves price those
    model_plans: bool = False

    def sparse_time(self, spec: ConvSpec, sparsity: float, threads: int, plan=None) -> float:
        """Seconds of the direct kernel at ``sparsity`` with ``plan``, else with the plan an
        untuned layer runs (the model's or the default, as in the sweep fitted)."""
        if plan is None and self.model_plans:
            plan = model_plan(self.costs, spec, 1.0 - sparsity, threads)
        return float(parts(self.costs, spec, 1.0 - sparsity, threads, plan) @ self.weights)

    def dense_time(self, spec: ConvSpec, key) -> float:
        gflops = self.dense_gflops.get(key) or float(np.median(list(self.dense_gflops.values())))
        return spec.dense_flops() / (gflops * 1e9)

    def speedup(self, spec, sparsity, threads, key) -> float:
        return self.dense_time(spec, key) / self.sparse_time(spec, sparsity, threads)

    @classmethod
    def from_json(cls, fit: dict) -> "FittedModel":
        """The model saved in a run's model_fit.json (with the calibration it refines)."""
        f = fit["fitted"]
        dense = {tuple(int(p) if p.isdigit() else p for p in k.split("|")): v
                 for k, v in f["dense_gflops"].items()}
        return cls(np.array([f["weights"][name] for name in PARTS]), dense,
                   KernelCosts.from_calibration(fit["calibration"]), f.get("model_plans", False))

    def as_dict(self) -> dict:
        return {"form": __doc__.split("\n\n")[1], "isa": self.costs.isa,
                "weights": dict(zip(PARTS, map(float, self.weights))),
                "dense_gflops": {"|".join(map(str, k)): v for k, v in self.dense_gflops.items()},
                "model_plans": self.model_plans}


def _dense_efficiency(frame: pd.DataFrame) -> dict:
    ok = frame[(frame["status"] == "ok") & frame["best_dense_s"].notna()]
    out = {}
    for (net, layer, b, t), g in ok.groupby(["network", "layer", "batch", "threads"]):
        spec = row_spec(g.iloc[0])
        out[(f"{net}/{layer}", int(b), int(t))] = spec.dense_flops() / g["best_dense_s"].iloc[0] / 1e9
    return out


def _design(costs: KernelCosts, rows: pd.DataFrame) -> np.ndarray:
    return np.array([row_parts(costs, r) for _, r in rows.iterrows()]).reshape(-1, len(PARTS))


def _weights(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    A = np.vstack([X / y[:, None], np.sqrt(RIDGE) * np.eye(len(PARTS))])
    b = np.concatenate([np.ones_like(y), np.sqrt(RIDGE) * np.ones(len(PARTS))])
    return lsq_linear(A, b, bounds=(0.0, np.inf)).x  # a part's cost is never negative


def _ran_model_plans(rows: pd.DataFrame) -> bool:
    """Whether the sweep's untuned direct points ran the model's plans (a calibrated host)."""
    return "tuned" in rows and bool((rows["tuned"] == "model").any())


def fit_model(frame: pd.DataFrame, costs: KernelCosts) -> FittedModel:
    rows = direct_rows(frame)
    if len(rows) < 3:
        raise ValueError("too few direct_sparse points to fit (need 3)")
    return FittedModel(_weights(_design(costs, rows), rows["median_s"].to_numpy()),
                       _dense_efficiency(frame), costs, _ran_model_plans(rows))


def predict_rows(model: FittedModel, rows: pd.DataFrame) -> np.ndarray:
    return _design(model.costs, rows) @ model.weights if len(rows) else np.zeros(0)


def held_out_text(worst_median: float) -> str:
    """A held-out error as the reports print it; NaN when nothing could be held out (one
    layer class only, say)."""
    return "n/a (nothing else to fit on)" if not np.isfinite(worst_median) else \
        f"{worst_median:.1%}"


def _held_out(X: np.ndarray, y: np.ndarray, labels: np.ndarray) -> dict:
    """Fit without each label's rows in turn; relative errors on the rows held out."""
    out = {}
    for label in sorted(set(labels)):
        held = labels == label
        if (~held).sum() < 3:
            continue
        err = np.abs(X[held] @ _weights(X[~held], y[~held]) / y[held] - 1)
        out[label] = {"median": float(np.median(err)), "worst": float(err.max())}
    return out


def validate(frame: pd.DataFrame, costs: KernelCosts) -> dict:
    """Fit on all points; then leave each layer, and each layer class (kernel size and
    stride), out in turn: relative errors of time."""
    rows = direct_rows(frame)
    if len(rows) < 3:
        raise ValueError("too few direct_sparse points to fit (need 3)")
    X, y = _design(costs, rows), rows["median_s"].to_numpy()
    model = FittedModel(_weights(X, y), _dense_efficiency(frame), costs, _ran_model_plans(rows))
    predicted = X @ model.weights
    rel = np.abs(predicted / y - 1)
    lolo = _held_out(X, y, (rows["network"] + "/" + rows["layer"]).to_numpy())
    loco = _held_out(X, y, np.array([layer_class(r) for _, r in rows.iterrows()]))
    return {"model": model, "points": pd.DataFrame({
        "layer": rows["layer"].to_numpy(), "sparsity": rows["sparsity"].to_numpy(),
        "batch": rows["batch"].to_numpy(), "threads": rows["threads"].to_numpy(),
        "measured_s": y, "predicted_s": predicted}),
        "median_rel_error": float(np.median(rel)), "worst_rel_error": float(rel.max()),
        "leave_one_layer_out": lolo,
        "worst_lolo_median": max((v["median"] for v in lolo.values()), default=float("nan")),
        "leave_one_class_out": loco,
        "worst_loco_median": max((v["median"] for v in loco.values()), default=float("nan"))}
