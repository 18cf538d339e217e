"""A GSL run's results over its seeds: each quantity as mean and standard deviation, and the
comparisons the run exists for (pruned against the best dense model of the same training
budget, guided against unguided)."""

from __future__ import annotations

import numpy as np


def best_dense(result: dict) -> dict:
    """Of the converged dense model and the one trained on for the pruned networks' budget,
    the one with the better validation accuracy (chosen on validation, reported on test)."""
    options = [result["dense"]] + ([result["dense_same_budget"]] if "dense_same_budget" in result else [])
    return max(options, key=lambda r: r["val_accuracy"])


def quantities(result: dict) -> dict[str, float]:
    """The numbers of one seed that the run reports."""
    out = {"dense_accuracy": result["dense"]["test_accuracy"],
           "best_dense_accuracy": best_dense(result)["test_accuracy"]}
    if "dense_same_budget" in result:
        out["dense_same_budget_accuracy"] = result["dense_same_budget"]["test_accuracy"]
    for stage in ("gsl", "unguided"):
        r = result.get(stage)
        if r is None:
            continue
        out[f"{stage}_accuracy"] = r["test_accuracy"]
        out[f"{stage}_points_below_best_dense"] = out["best_dense_accuracy"] - r["test_accuracy"]
        out[f"{stage}_conv_sparsity"] = r["conv_sparsity"]
        if "conv_speedup_measured" in r:
            out[f"{stage}_conv_speedup"] = r["conv_speedup_measured"]
        e2e = r.get("end_to_end") or {}
        for key in ("sparsified_ms", "speedup_vs_torch", "speedup_vs_onnxruntime",
                    "sparse_execution_accuracy"):
            if key in e2e:
                out[f"{stage}_e2e_{key}"] = e2e[key]
    if "gsl_conv_speedup" in out and "unguided_conv_speedup" in out:
        out["guided_over_unguided_conv_speed"] = out["gsl_conv_speedup"] / out["unguided_conv_speedup"]
        out["guided_minus_unguided_accuracy"] = out["gsl_accuracy"] - out["unguided_accuracy"]
    if "gsl_e2e_sparsified_ms" in out and "unguided_e2e_sparsified_ms" in out:
        out["guided_over_unguided_e2e_speed"] = (out["unguided_e2e_sparsified_ms"]
                                                 / out["gsl_e2e_sparsified_ms"])
    return out


def aggregate(runs: list[dict]) -> dict[str, dict]:
    """Each quantity over the seeds: mean, sample standard deviation (0 for one seed), values."""
    per_seed = [quantities(r) for r in runs]
    keys = [k for k in per_seed[0] if all(k in q for q in per_seed)]
    out = {}
    for key in keys:
        values = np.array([q[key] for q in per_seed], dtype=float)
        out[key] = {"mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "values": values.tolist()}
    return out


def mean_std(stat: dict, digits: int = 2, unit: str = "") -> str:
    return f"{stat['mean']:.{digits}f}{unit} ± {stat['std']:.{digits}f}{unit}"
