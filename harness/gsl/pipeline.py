"""End to end: dense training (or a checkpoint), guided pruning, fine-tuning, an unguided
comparison, the measured speed of the pruned convolutions' real sparsity patterns, and the
pruned network run whole with sparse convolutions (its accuracy and latency)."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from harness import kernels
from harness.errors import HarnessError
from harness.gsl.datasets import ImageData
from harness.machine.hostinfo import detect_host
from harness.conv.layers import LayerShape
from harness.machine.profiles import Profile, build_target
from harness.store.runs import MODEL_FIT, RunStore
from harness.sweep.results import results_table
from harness.sweep.plan import SweepConfig, plan_points
from harness.sweep.run import run_sweep
from harness.gsl.guidance import LayerGuidance, allocate_for_time, guide
from harness.models.speedup import ModelSpeedup
from harness.gsl.network import conv_shapes
from harness.gsl.pruning import GuidedPruner, PruneSettings, accuracy, sparsity, train_epochs
from harness.gsl.stages import StageRecord
from harness.networks.end_to_end import Case, time_case
from harness.networks.sparsify import sparsify

EVAL_BATCH = 512  # test images per call of the sparse execution


def timing_methods() -> list[str]:
    """What the pruned convolutions are timed with: the modelled sparse kernel and every
    available dense method (the best of which is the baseline)."""
    return [kernels.modelled_method(), *(m for m in kernels.methods_where(dense=True)
                                         if kernels.METHODS[m].available())]


@dataclass
class GSLSettings:
    dense_epochs: int = 3
    prune_epochs: int = 4
    finetune_epochs: int = 2
    max_target: float = 0.95
    allocation: str = "time"  # "time": spend the remaining weights where they cost least time;
    #                           "sweet-spot": every layer at its own sweet-spot target
    compare_unguided: bool = True
    dense_same_epochs: bool = True  # also train the dense model as long as the pruned one
    sweep_layers: bool = True  # fit the model on a sweep of the network's own layer shapes
    end_to_end: bool = True  # run the pruned network whole through harness.sparsify
    timing_repeats: int = 5
    seed: int = 0


def conv_weights(model) -> dict[str, np.ndarray]:
    return {n: m.weight.detach().numpy().copy() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d)}


def save_convs(path: Path, weights: dict[str, np.ndarray], shapes: dict[str, LayerShape]) -> None:
    """The convolutions' weights as an .npz named by layer, the form sweeps load (--weights)."""
    np.savez(path, **{shapes[n].name: w for n, w in weights.items() if n in shapes})


def time_patterns(variants: dict[str, dict[str, np.ndarray]], shapes: dict[str, LayerShape],
                  profile: Profile, run_dir: Path, repeats: int) -> pd.DataFrame:
    """Time the convolutions' real weights of every variant in one sweep (verified like every
    sweep), so the variants' points interleave on the same machine state and share their dense
    baselines. A layer of variant v is named "<layer>@v"."""
    layers, files = [], {}
    for variant, weights in variants.items():
        for name, w in weights.items():
            if name in shapes:
                layer = dataclasses.replace(shapes[name], name=f"{shapes[name].name}@{variant}")
                layers.append(layer)
                files[layer.key] = w
    cfg = SweepConfig(profile=profile, target=build_target(profile), host=detect_host(),
                      layers=layers, sparsities=[0.0], methods=timing_methods(), repeats=repeats,
                      min_time=0.02, weight_files=files)
    store = RunStore(run_dir)
    try:
        run_sweep(cfg, store, plan_points(cfg), progress=False)
        frame = results_table(store.rows())
        store.write_table(frame)
    finally:
        store.close()
    return frame


LAYER_SWEEP_SPARSITIES = [0.3, 0.5, 0.7, 0.8, 0.9, 0.95]


def sweep_own_layers(shapes: dict[str, LayerShape], profile: Profile, run_dir: Path,
                     repeats: int) -> Path | None:
    """Sweep the network's own convolution shapes (random weights) and fit the model on them,
    so the guidance rests on measurements of these very layers. Returns the fit file."""
    from harness.models.analysis import analyse
    from harness.machine.calibrate import calibration
    host = detect_host()
    cfg = SweepConfig(profile=profile, target=build_target(profile), host=host,
                      layers=list(shapes.values()), sparsities=LAYER_SWEEP_SPARSITIES,
                      methods=timing_methods(), repeats=repeats, min_time=0.02)
    store = RunStore(run_dir)
    run_sweep(cfg, store, plan_points(cfg), progress=False)
    frame = results_table(store.rows())
    store.write_table(frame)
    try:
        analyse(store, frame, profile, calibration(cfg.built, host, 1))
    finally:
        store.close()
    return run_dir / MODEL_FIT


def network_speed(frame: pd.DataFrame, variant: str,
                  sparse_layers: set[str]) -> tuple[pd.DataFrame, float]:
    """Per layer of ``variant``: the best dense time (the fastest dense measurement of that
    layer in any variant: dense methods ignore the weights) and the direct sparse time on the
    variant's weights; the layers pruned for speed run direct sparse, the others the best dense
    method. Returns the table and the convolutions' speedup over all-dense."""
    ok = frame[frame["status"] == "ok"]
    base = ok["layer"].str.rsplit("@", n=1).str[0]
    dense = ok[ok["dense"] == True].groupby(base)["median_s"].min()  # noqa: E712
    rows = []
    for layer, g in ok[ok["layer"].str.endswith(f"@{variant}")].groupby("layer", sort=False):
        name = layer.rsplit("@", 1)[0]
        direct = g[g["method"] == kernels.modelled_method()]["median_s"].min()
        sparse = name in sparse_layers
        rows.append({"layer": name, "sparsity": g["sparsity"].iloc[0], "best_dense_s": dense[name],
                     "direct_sparse_s": direct, "speedup": dense[name] / direct,
                     "runs_sparse": sparse, "deployed_s": direct if sparse else dense[name]})
    table = pd.DataFrame(rows)
    return table, float(table["best_dense_s"].sum() / table["deployed_s"].sum())


def prune_and_finetune(dense_model, data: ImageData, guidance: dict[str, LayerGuidance],
                       prune: PruneSettings, settings: GSLSettings, log, label: str,
                       uniform_target: float | None = None):
    """Prune a copy of the dense model, then fine-tune it with the masks fixed. Returns the
    model and the stage's record: accuracies, per-layer notes and the training history."""
    model = copy.deepcopy(dense_model)
    steps = settings.prune_epochs * -(-len(data.train_x) // prune.batch_size)
    pruner = GuidedPruner(model, guidance, prune, steps, uniform_target)
    history: list = []
    train_epochs(model, data, settings.prune_epochs, prune, pruner=pruner, log=log,
                 phase=f"{label} prune", history=history, seed=settings.seed + 1)
    pruner.finish()
    pruned_acc = accuracy(model, data.test_x, data.test_y)
    train_epochs(model, data, settings.finetune_epochs, prune, fixed_masks=pruner, lr_scale=0.1,
                 log=log, phase=f"{label} fine-tune", history=history, seed=settings.seed + 2)
    return model, {"accuracy_after_pruning": pruned_acc,
                   "accuracy_after_finetune": accuracy(model, data.test_x, data.test_y),
                   "layers": {n: {"kind": st.kind, "reason": st.reason}
                              for n, st in pruner.layers.items()},
                   "history": history}


def pruning_stage(stage: str, dense_model, stages: StageRecord, out_dir: Path, log, **how):
    """The pruned model of ``stage`` ("gsl" or "unguided"): from the run directory when the
    stage has finished before, else pruned and fine-tuned now, then saved and recorded."""
    weights = out_dir / f"pruned_{stage}.pt"
    done = stages.get(stage)
    if done is not None and weights.exists():
        model = copy.deepcopy(dense_model)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        log(f"{stage}: finished before, loaded from {weights}")
        return model, done
    model, record = prune_and_finetune(dense_model, log=log, label=stage.replace("gsl", "GSL"), **how)
    torch.save(model.state_dict(), weights)
    pd.DataFrame(record["history"]).to_csv(out_dir / f"history_{stage}.csv", index=False)
    stages.record(stage, record)
    return model, record


def dense_stage(model, data: ImageData, prune: PruneSettings, settings: GSLSettings,
                checkpoint: Path | None, out_dir: Path, stages: StageRecord, log) -> float:
    """Load or train the dense model (in place); returns its test accuracy."""
    trained = out_dir / "dense.pt"
    if checkpoint is not None:
        try:
            model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        except Exception as exc:  # torch raises many types for a bad or mismatched file
            raise HarnessError(f"{checkpoint}: not a state dict of this network "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        log(f"dense model loaded from {checkpoint}")
    elif stages.get("dense") is not None and trained.exists():
        model.load_state_dict(torch.load(trained, map_location="cpu", weights_only=True))
        log(f"dense model: trained before, loaded from {trained}")
    else:
        train_epochs(model, data, settings.dense_epochs, prune, log=log, phase="dense",
                     seed=settings.seed)
        torch.save(model.state_dict(), trained)
    dense_acc = accuracy(model, data.test_x, data.test_y)
    stages.record("dense", {"accuracy": dense_acc})
    log(f"dense model: test accuracy {dense_acc:.2f}%")
    return dense_acc


def outcome(record: dict, speedup: float, per_layer: pd.DataFrame) -> dict:
    """A pruning stage's entry in summary.json: accuracies and measured speed."""
    return {"accuracy_after_pruning": record["accuracy_after_pruning"],
            "accuracy_after_finetune": record["accuracy_after_finetune"],
            "conv_speedup_measured": speedup, "layers": per_layer.to_dict("records")}


def end_to_end(pruned: nn.Module, data: ImageData, log) -> dict:
    """The pruned network run whole through harness.sparsify: its test accuracy as the sparse
    execution computes it, and its batch-1 latency against dense PyTorch and ONNX Runtime on
    the same weights (one thread, interleaved)."""
    example = torch.from_numpy(data.test_x[:1])
    network = sparsify(copy.deepcopy(pruned), torch.from_numpy(data.test_x[:EVAL_BATCH]))
    correct = 0
    for i in range(0, len(data.test_x), EVAL_BATCH):
        pred = network(torch.from_numpy(data.test_x[i:i + EVAL_BATCH])).argmax(1).numpy()
        correct += int((pred == data.test_y[i:i + EVAL_BATCH]).sum())
    row = time_case(Case("gsl", 0.0, 1, 1), pruned, example, pruned=True)
    row.pop("per_layer")
    result = {"sparse_execution_accuracy": 100.0 * correct / max(1, len(data.test_x)),
              **{k: row[k] for k in row if k.endswith("_ms") or k.startswith("speedup_vs_")
                 or k in ("torch_best", "sparse_layers", "layers")}}
    log(f"end to end (batch 1, 1 thread): sparsified {row['sparsified_ms']:.3f} ms, "
        f"{row['torch_best']} {row['torch_best_ms']:.3f} ms"
        + (f", ONNX Runtime {row['onnxruntime_ms']:.3f} ms" if "onnxruntime_ms" in row else "")
        + f"; test accuracy of the sparse execution {result['sparse_execution_accuracy']:.2f}%")
    return result


def run_gsl(model, data: ImageData, profile: Profile, out_dir: Path, *, prune: PruneSettings,
            settings: GSLSettings, checkpoint: Path | None = None, log=print,
            results_root: Path = Path("results")) -> dict:
    """The whole run; every stage is recorded in the run directory as it finishes, and a rerun
    into the same directory (same settings) resumes after the last finished stage."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stages = StageRecord(out_dir, {"gsl": asdict(settings), "prune": asdict(prune),
                                   "checkpoint": str(checkpoint) if checkpoint else None,
                                   "train_images": len(data.train_x), "profile": profile.name})
    if stages.finished:
        log(f"resuming {out_dir}: finished before: {', '.join(stages.finished)}")
    torch.manual_seed(settings.seed)
    started = time.time()
    dense_acc = dense_stage(model, data, prune, settings, checkpoint, out_dir, stages, log)

    shapes = conv_shapes(model, torch.from_numpy(data.test_x[:1]), network="gsl")
    fit_file = None
    if settings.sweep_layers:
        log("sweeping the network's own convolution shapes to fit the performance model")
        fit_file = sweep_own_layers(shapes, profile, out_dir / "layer_sweep", settings.timing_repeats)
    speedup = ModelSpeedup(profile, results_root, fit_file=fit_file)
    guidance = guide(shapes, speedup, settings.max_target)
    if settings.allocation == "time":
        guidance = allocate_for_time(guidance, shapes, speedup.sparse_time)
    log(f"guidance from the {speedup.source}:")
    for g in guidance.values():
        log(f"  {g.name}: {'prune to ' + format(g.target, '.3f') if g.prune else 'keep dense'}"
            f" (sweet spot {g.lower:.3f}-{g.upper:.3f}, projected {g.speedup_at_target:.2f}x): "
            f"{g.reason}")

    how = dict(data=data, guidance=guidance, prune=prune, settings=settings)
    model_gsl, gsl = pruning_stage("gsl", model, stages, out_dir, log, **how)
    weights = {"gsl": conv_weights(model_gsl)}
    save_convs(out_dir / "pruned_convs.npz", weights["gsl"], shapes)

    # Train everything first, then time: timings taken back to back, on a machine no longer
    # busy training, are comparable.
    unguided = None
    if settings.compare_unguided:
        total = sum(w.size for n, w in weights["gsl"].items() if n in shapes)
        kept = sum(np.count_nonzero(w) for n, w in weights["gsl"].items() if n in shapes)
        uniform = 1 - kept / total
        log(f"unguided comparison: every convolution pruned to {uniform:.3f} "
            f"(same {kept} remaining conv weights)")
        model_u, unguided = pruning_stage("unguided", model, stages, out_dir, log,
                                          uniform_target=uniform, **how)
        unguided = {"uniform_sparsity": uniform, **unguided}
        weights["unguided"] = conv_weights(model_u)
        save_convs(out_dir / "pruned_convs_unguided.npz", weights["unguided"], shapes)
    if settings.dense_same_epochs and stages.get("dense_same_epochs") is None:
        # Pruning and fine-tuning also train: the fair dense reference trains as many epochs.
        longer = copy.deepcopy(model)
        train_epochs(longer, data, settings.prune_epochs + settings.finetune_epochs, prune,
                     log=log, phase="dense (same epochs)", seed=settings.seed + 3)
        stages.record("dense_same_epochs", {"accuracy": accuracy(longer, data.test_x, data.test_y)})

    log("timing the pruned convolutions' real patterns")
    timing = time_patterns(weights, shapes, profile, out_dir / "timing", settings.timing_repeats)
    gsl_set = {n for n, st in gsl["layers"].items()
               if st["kind"] == "conv" and "restored" not in st["reason"]}
    per_layer, net_speedup = network_speed(timing, "gsl", gsl_set)
    measured = per_layer.set_index("layer")["speedup"]
    layer_rows = []
    for name, g in guidance.items():
        st = gsl["layers"].get(name)
        reached = sparsity(model_gsl.get_submodule(name).weight)
        layer_rows.append({"layer": name, "shape": str(shapes[name].spec(1).weight_shape),
                           "in_pruned_set": g.prune, "why": st["reason"] if st else g.reason,
                           "sweet_spot_lower": g.lower, "sweet_spot_upper": g.upper,
                           "target": g.target, "sparsity": reached,
                           "predicted_speedup": speedup(shapes[name], reached),
                           "measured_speedup": measured.get(name, np.nan)})
    pd.DataFrame(layer_rows).to_csv(out_dir / "layers.csv", index=False)
    summary = {"dense_accuracy": dense_acc, "gsl": outcome(gsl, net_speedup, per_layer),
               "model": speedup.source, "settings": asdict(settings),
               "prune_settings": asdict(prune),
               "pattern": f"block:{prune.block}" if prune.block > 1 else "magnitude"}
    # what the pattern (and the pruning) cost in accuracy against the dense model
    summary["gsl"]["accuracy_cost_points"] = dense_acc - summary["gsl"]["accuracy_after_finetune"]
    if unguided is not None:
        per_layer_u, net_u = network_speed(timing, "unguided", set(shapes))  # all pruned, all sparse
        summary["unguided"] = {"uniform_sparsity": unguided["uniform_sparsity"],
                               **outcome(unguided, net_u, per_layer_u)}
    if settings.end_to_end:
        log("running the pruned network end to end with sparse convolutions")
        summary["gsl"]["end_to_end"] = end_to_end(model_gsl, data, log)
        if unguided is not None:
            summary["unguided"]["end_to_end"] = end_to_end(model_u, data, log)
    if stages.get("dense_same_epochs") is not None:
        summary["dense_accuracy_same_epochs"] = stages.get("dense_same_epochs")["accuracy"]
    summary["seconds_this_session"] = time.time() - started
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    plot_history(pd.DataFrame(gsl["history"]), out_dir, dense_acc)
    return summary


def plot_history(history: pd.DataFrame, out_dir: Path, dense_acc: float) -> None:
    from harness.report import plots  # matplotlib set up for files
    import matplotlib.pyplot as plt
    if history.empty:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(1, len(history) + 1)
    a1.plot(x, history["accuracy"], marker="o", color="#c0392b", label="GSL")
    a1.axhline(dense_acc, color="black", lw=0.8, ls="--", label="dense")
    a1.set_xlabel("epoch (pruning, then fine-tuning)")
    a1.set_ylabel("test accuracy (%)")
    a1.legend(fontsize=8)
    for col in [c for c in history.columns if c.startswith("sparsity:")]:
        a2.plot(x, history[col], marker=".", label=col.split(":", 1)[1])
    a2.set_xlabel("epoch (pruning, then fine-tuning)")
    a2.set_ylabel("sparsity (fraction of zero weights)")
    a2.set_ylim(0, 1)
    a2.legend(fontsize=7, ncols=2)
    fig.suptitle("Guided sparsity learning: accuracy and per-layer sparsity")
    fig.tight_layout()
    plots.save(fig, out_dir, "gsl_training")
