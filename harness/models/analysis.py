"""After a sweep: calibrate the host, fit the models, validate them, derive sweet spots and
per-layer sparsity targets, and project to the paper's machines. Writes into the run dir."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import yaml

from harness.errors import HarnessError
from harness.models.curves import GAIN_LIMIT, crossing, measured_upper
from harness.models.fitted import held_out_text, validate
from harness.models.rows import direct_rows, row_spec
from harness.conv.layers import network_layers
from harness.kernels import modelled_method, sparse_method_for
from harness.kernels.pointwise import PointwiseSparseConv
from harness.models.mechanistic import KernelCosts, zero_shot, zero_shot_validation
from harness.models.pointwise_model import pointwise_zero_shot
from harness.models.paper import LayerCost, PaperModel
from harness.machine.hostinfo import HostInfo, detect_host
from harness.machine.profiles import PROFILE_DIR, Profile, load_profile
from harness.store.runs import MODEL_FIT, MODEL_FIT_SCHEMA, MODEL_FIT_VERSION, RunStore
from harness.sweep.results import crossover_sparsity

PAPER_MEASURED = {"atom-c2750": 7.3, "xeon-e5-2697v4": 3.4, "xeon-phi-7250": 3.1}
PAPER_PROFILES = ("atom_c2750.yaml", "xeon_e5_2697v4.yaml", "xeon_phi_7250.yaml")
PAPER_DENSITY = 0.09


def fitted_alpha(rows: pd.DataFrame, cal: dict) -> float:
    """The paper's alpha for this host: sparse time per useful FLOP over dense time per FLOP
    at the measured SGEMM rate, median over the compute-bound (densest half) points."""
    dense = rows[rows["sparsity"] <= rows["sparsity"].median()]
    ratios = []
    for _, r in dense.iterrows():
        rate = cal["sgemm_gflops_1"]["median"] if r["threads"] == 1 else \
            cal["sgemm_gflops_all"]["median"]
        ratios.append(r["median_s"] * rate * 1e9 / r["useful_flops"])
    return float(np.median(ratios))


def sweet_spots(frame: pd.DataFrame, fitted, paper: PaperModel | None) -> pd.DataFrame:
    out = []
    for (net, layer, b, t), g in direct_rows(frame).groupby(["network", "layer", "batch", "threads"]):
        g = g.dropna(subset=["speedup"])
        if g.empty:
            continue
        r0 = g.iloc[0]
        spec, key = row_spec(r0), (f"{net}/{layer}", int(b), int(t))
        s, v = g["sparsity"].to_numpy(), g["speedup"].to_numpy()
        top = float(s.max())

        def model_speedup(x, spec=spec, key=key, t=int(t)):
            return fitted.speedup(spec, x, t, key)
        limit = model_speedup(top)
        row = {"network": net, "layer": layer, "batch": int(b), "threads": int(t),
               "measured_crossover": crossover_sparsity(s, v),
               "fitted_crossover": crossing(model_speedup, 0.0, top, 1.0),
               "measured_upper": measured_upper(s, v),
               "fitted_upper": crossing(lambda x: model_speedup(x) * GAIN_LIMIT, 0.0, top, limit),
               "measured_best_speedup": float(v.max()), "fitted_speedup_at_top": limit,
               "top_sparsity": top}
        if paper is not None:
            row["paper_lower"], row["paper_upper"] = paper.sweet_spot(spec)
        out.append(row)
    return pd.DataFrame(out)


def targets(spots: pd.DataFrame, profile: Profile) -> dict:
    """Per-layer sparsity targets for the pruning stage (batch 1, fewest threads)."""
    layers = {}
    for _, r in spots.sort_values(["batch", "threads"]).drop_duplicates("layer").iterrows():
        lower = r["fitted_crossover"] if np.isfinite(r["fitted_crossover"]) else r["measured_crossover"]
        upper = r["fitted_upper"] if np.isfinite(r["fitted_upper"]) else r["measured_upper"]
        layers[r["layer"]] = {
            "prune": bool(np.isfinite(lower)),
            "min_sparsity": None if not np.isfinite(lower) else round(float(lower), 3),
            "target_sparsity": None if not np.isfinite(upper) else round(float(upper), 3),
            "measured_best_speedup": round(float(r["measured_best_speedup"]), 2),
        }
    return {"profile": profile.name, "rule": "min: where direct sparse starts to beat the best "
            f"dense; target: past it extra sparsity gains < {int((GAIN_LIMIT - 1) * 100)}% speed",
            "layers": layers}


def host_difference(profile: Profile, host: HostInfo | None) -> str:
    """How far this host is from a profile's machine: cores, clock and caches side by side."""
    if host is None:
        return ""
    parts = [f"cores {host.logical_cpus} here vs {profile.total_cores * profile.threads_per_core}"]
    if profile.clock_ghz and host.max_mhz:
        parts.append(f"clock {host.max_mhz / 1000:.1f} vs {profile.clock_ghz:.1f} GHz")
    for level in ("l1d", "l2", "l3"):
        if level in profile.caches_kib or level in host.caches_kib:
            parts.append(f"{level} {host.caches_kib.get(level, 0)} vs "
                         f"{profile.caches_kib.get(level, 0)} KiB")
    return ", ".join(parts)


def projection(alpha_host: float, host: HostInfo | None = None) -> pd.DataFrame:
    """The paper's model on its three machines at 9% non-zeros, next to the paper's numbers,
    with how far this host is from each machine."""
    rows = []
    for name in PAPER_PROFILES:
        profile = load_profile(PROFILE_DIR / name)
        alpha, note = profile.alpha, "paper alpha"
        if alpha is None:
            alpha, note = alpha_host, "alpha fitted on this host (paper gives none)"
        model = PaperModel(profile, alpha=alpha)
        layers = [l for l in network_layers("alexnet") if l.name != "conv1"]
        total_dense = sum(LayerCost.of(l).flops for l in layers) / model.flops_per_s
        total_sparse = sum(max(model.times(l, 1 - PAPER_DENSITY)[1:]) for l in layers)
        rows.append({"profile": profile.name, "alpha": alpha, "alpha_source": note,
                     "model_speedup_conv2_5": total_dense / total_sparse,
                     "paper_measured": PAPER_MEASURED.get(profile.name),
                     "host_vs_machine": host_difference(profile, host)})
    return pd.DataFrame(rows)


def analyse(store: RunStore, frame: pd.DataFrame, profile: Profile, cal: dict) -> dict:
    rows = direct_rows(frame)
    if len(rows) < 3 or frame["speedup"].notna().sum() == 0:
        raise HarnessError("model fit needs direct_sparse points and a dense baseline in the run")
    costs = KernelCosts.from_calibration(cal)
    report = validate(frame, costs)
    fitted = report["model"]
    alpha = fitted_alpha(rows.dropna(subset=["useful_flops"]), cal)
    threads = int(rows["threads"].min())
    rate = cal["sgemm_gflops_1"] if threads == 1 else cal["sgemm_gflops_all"]
    host_paper = dataclasses.replace(
        profile, alpha=profile.alpha or alpha,
        peak_sgemm_gflops=rate["median"],
        stream_gbps=cal["triad_gbps_1" if threads == 1 else "triad_gbps_all"]["dram"]["median"])
    spots = sweet_spots(frame, fitted, PaperModel(host_paper))
    zero = zero_shot_validation(costs, rows)  # the mechanistic model, calibration alone
    report["points"]["zero_shot_s"] = zero["predicted_s"]
    spots["zero_shot_crossover"] = [
        zero["crossovers"].get(f"{r.network}/{r.layer}|{r.batch}|{r.threads}",
                               {}).get("zero_shot", np.nan)
        for r in spots.itertuples()]
    report["points"].to_csv(store.dir / "model_points.csv", index=False)
    spots.to_csv(store.dir / "sweet_spots.csv", index=False)
    proj = projection(alpha, detect_host())  # the host the calibration was taken on
    proj.to_csv(store.dir / "projection.csv", index=False)
    (store.dir / "targets.yaml").write_text(yaml.safe_dump(targets(spots, profile), sort_keys=False))
    summary = {
        "fitted": fitted.as_dict(),
        "validation": {k: report[k] for k in ("median_rel_error", "worst_rel_error",
                                              "leave_one_layer_out", "worst_lolo_median",
                                              "leave_one_class_out", "worst_loco_median")},
        "zero_shot": {k: v for k, v in zero.items() if k != "predicted_s"},
        "paper_model_on_host": {"alpha_fitted": alpha, "sgemm_gflops": rate["median"],
                                "stream_gbps": host_paper.stream_gbps},
        "calibration": cal,
    }
    pointwise = direct_rows(frame, PointwiseSparseConv.method)  # networks' 1x1 layers
    if len(pointwise):
        summary["zero_shot_pointwise"] = {k: v for k, v in zero_shot_validation(
            costs, pointwise, pointwise_zero_shot).items() if k != "predicted_s"}
        summary["zero_shot_as_run"] = {k: v for k, v in zero_shot_validation(
            costs, rows_as_run(frame), zero_shot_as_run).items() if k != "predicted_s"}
    store.write_json(MODEL_FIT, MODEL_FIT_SCHEMA, MODEL_FIT_VERSION, summary)
    return {"summary": summary, "spots": spots, "projection": proj}


def rows_as_run(frame: pd.DataFrame) -> pd.DataFrame:
    """Each layer's rows of the sparse kernel that runs it in a sparsified network (the
    pointwise one for 1x1 layers without padding, where the sweep timed it)."""
    parts = [direct_rows(frame, method) for method in (modelled_method(),
                                                       PointwiseSparseConv.method)]
    rows = pd.concat(parts)
    runs = rows.apply(lambda r: sparse_method_for(row_spec(r)), axis=1) if len(rows) else []
    chosen = rows[rows["method"] == runs]
    # a layer whose running kernel was not swept keeps the other's rows
    layer = rows["network"] + "/" + rows["layer"]
    return pd.concat([chosen, rows[~layer.isin(set(layer[chosen.index]))]])


def zero_shot_as_run(costs: KernelCosts, rows: pd.DataFrame) -> np.ndarray:
    """Each row's zero-shot time by its own kernel's model."""
    pointwise = (rows["method"] == PointwiseSparseConv.method).to_numpy()
    out = np.empty(len(rows))
    if pointwise.any():
        out[pointwise] = pointwise_zero_shot(costs, rows[pointwise])
    if (~pointwise).any():
        out[~pointwise] = zero_shot(costs, rows[~pointwise])
    return out


# the zero-shot validations of a fit (model_fit.json's keys), in words
ZERO_SHOT_KINDS = {"zero_shot": "mechanistic model",
                   "zero_shot_pointwise": "pointwise kernel's model (1x1 layers without padding)",
                   "zero_shot_as_run": "both models, each layer on the kernel that runs it in "
                                       "a sparsified network"}


def zero_shot_text(zero: dict) -> str:
    """A zero-shot validation's errors and crossovers in one phrase."""
    return (f"median error {zero['median_rel_error']:.1%}, worst {zero['worst_rel_error']:.1%}; "
            f"{zero['crossovers_within_0.05']} of {zero['crossovers_compared']} crossovers "
            f"within 0.05 of the measured ones (worst {zero['worst_crossover_error']:.3f})")


def print_analysis(result: dict) -> None:
    v = result["summary"]["validation"]
    print(f"fitted model: median error {v['median_rel_error']:.1%}, worst {v['worst_rel_error']:.1%}, "
          f"worst leave-one-layer-out median {held_out_text(v['worst_lolo_median'])}, "
          f"leave-one-class-out {held_out_text(v['worst_loco_median'])}; paper alpha on this "
          f"host {result['summary']['paper_model_on_host']['alpha_fitted']:.2f}")
    for key, what in ZERO_SHOT_KINDS.items():
        zero = result["summary"].get(key)
        if zero and zero["crossovers_compared"]:
            print(f"{what}, zero-shot (calibration only): {zero_shot_text(zero)}")
    cols = ["layer", "batch", "threads", "measured_crossover", "fitted_crossover",
            "zero_shot_crossover", "paper_lower",
            "measured_upper", "fitted_upper", "paper_upper"]
    spots = result["spots"]
    print(spots[[c for c in cols if c in spots]].round(3).to_string(index=False))
    print(result["projection"].round(2).to_string(index=False))
