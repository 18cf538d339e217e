"""End to end: dense training (or a checkpoint), guided pruning, fine-tuning, an unguided
comparison, and the measured speed of the pruned convolutions' real sparsity patterns."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..datasets import ImageData
from ..hostinfo import detect_host
from ..layers import LayerShape
from ..profiles import Profile, build_target
from ..store import RunStore
from ..results import results_table
from ..sweep import SweepConfig, plan_points, run_sweep
from .guidance import LayerGuidance, ModelSpeedup, allocate_for_time, guide
from .network import conv_shapes
from .pruning import GuidedPruner, PruneSettings, accuracy, sparsity, train_epochs

TIMING_METHODS = ["direct_sparse", "onednn", "dense_gemm"]


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
    timing_repeats: int = 5
    seed: int = 0


def conv_weights(model) -> dict[str, np.ndarray]:
    return {n: m.weight.detach().numpy().copy() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d)}


def save_convs(path: Path, weights: dict[str, np.ndarray], shapes: dict[str, LayerShape]) -> None:
    """The convolutions' weights as an .npz named by layer, the form sweeps load (--weights)."""
    np.savez(path, **{shapes[n].name: w for n, w in weights.items() if n in shapes})


def time_patterns(weights: dict[str, np.ndarray], shapes: dict[str, LayerShape], profile: Profile,
                  run_dir: Path, repeats: int) -> pd.DataFrame:
    """Time each convolution's real weights with the sweep (verified like every sweep)."""
    layers = [shapes[n] for n in weights if n in shapes]
    cfg = SweepConfig(profile=profile, target=build_target(profile), host=detect_host(),
                      layers=layers, sparsities=[0.0], methods=TIMING_METHODS, repeats=repeats,
                      min_time=0.02, weight_files={shapes[n].key: w for n, w in weights.items()
                                                   if n in shapes})
    store = RunStore(run_dir)
    run_sweep(cfg, store, plan_points(cfg), progress=False)
    frame = results_table(store.rows())
    store.write_table(frame)
    store.close()
    return frame


LAYER_SWEEP_SPARSITIES = [0.3, 0.5, 0.7, 0.8, 0.9, 0.95]


def sweep_own_layers(shapes: dict[str, LayerShape], profile: Profile, run_dir: Path,
                     repeats: int) -> Path | None:
    """Sweep the network's own convolution shapes (random weights) and fit the model on them,
    so the guidance rests on measurements of these very layers. Returns the fit file."""
    from ..analysis import analyse
    from ..calibrate import calibration
    host = detect_host()
    cfg = SweepConfig(profile=profile, target=build_target(profile), host=host,
                      layers=list(shapes.values()), sparsities=LAYER_SWEEP_SPARSITIES,
                      methods=TIMING_METHODS, repeats=repeats, min_time=0.02)
    store = RunStore(run_dir)
    run_sweep(cfg, store, plan_points(cfg), progress=False)
    frame = results_table(store.rows())
    store.write_table(frame)
    try:
        analyse(store, frame, profile, calibration(cfg.built, host, 1),
                host.caches_kib.get("l2", 1024) * 1024, cfg.built.isa)
    finally:
        store.close()
    return run_dir / "model_fit.json"


def network_speed(frame: pd.DataFrame, sparse_layers: set[str]) -> tuple[pd.DataFrame, float]:
    """Per layer: best dense time and direct sparse time on its real weights; the network's
    convolutions run the layers pruned for speed with direct sparse and the others with the
    best dense method. Returns the table and the convolutions' speedup over all-dense."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for layer, g in ok.groupby("layer", sort=False):
        dense = g[g["method"].isin(["onednn", "dense_gemm"])]["median_s"].min()
        direct = g[g["method"] == "direct_sparse"]["median_s"].min()
        sparse = layer in sparse_layers
        rows.append({"layer": layer, "sparsity": g["sparsity"].iloc[0], "best_dense_s": dense,
                     "direct_sparse_s": direct, "speedup": dense / direct, "runs_sparse": sparse,
                     "deployed_s": direct if sparse else dense})
    table = pd.DataFrame(rows)
    return table, float(table["best_dense_s"].sum() / table["deployed_s"].sum())


def prune_and_finetune(dense_model, data: ImageData, guidance: dict[str, LayerGuidance],
                       prune: PruneSettings, settings: GSLSettings, log, label: str,
                       uniform_target: float | None = None):
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
    return model, pruner, pruned_acc, accuracy(model, data.test_x, data.test_y), history


def run_gsl(model, data: ImageData, profile: Profile, out_dir: Path, *, prune: PruneSettings,
            settings: GSLSettings, checkpoint: Path | None = None, log=print,
            results_root: Path = Path("results")) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    started = time.time()
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        log(f"dense model loaded from {checkpoint}")
    else:
        train_epochs(model, data, settings.dense_epochs, prune, log=log, phase="dense",
                     seed=settings.seed)
        torch.save(model.state_dict(), out_dir / "dense.pt")
    dense_acc = accuracy(model, data.test_x, data.test_y)
    log(f"dense model: test accuracy {dense_acc:.2f}%")

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

    model_gsl, pruner, pruned_acc, final_acc, history = prune_and_finetune(
        model, data, guidance, prune, settings, log, "GSL")
    torch.save(model_gsl.state_dict(), out_dir / "pruned.pt")
    weights = conv_weights(model_gsl)
    save_convs(out_dir / "pruned_convs.npz", weights, shapes)

    # Train everything first, then time: timings taken back to back, on a machine no longer
    # busy training, are comparable.
    unguided = None
    if settings.compare_unguided:
        total = sum(w.size for n, w in weights.items() if n in shapes)
        kept = sum(np.count_nonzero(w) for n, w in weights.items() if n in shapes)
        uniform = 1 - kept / total
        log(f"unguided comparison: every convolution pruned to {uniform:.3f} "
            f"(same {kept} remaining conv weights)")
        model_u, _, pruned_u, final_u, hist_u = prune_and_finetune(
            model, data, guidance, prune, settings, log, "unguided", uniform_target=uniform)
        pd.DataFrame(hist_u).to_csv(out_dir / "history_unguided.csv", index=False)
        weights_u = conv_weights(model_u)
        save_convs(out_dir / "pruned_convs_unguided.npz", weights_u, shapes)
        unguided = (uniform, pruned_u, final_u, weights_u)
    dense_same = None
    if settings.dense_same_epochs:
        # Pruning and fine-tuning also train: the fair dense reference trains as many epochs.
        longer = copy.deepcopy(model)
        train_epochs(longer, data, settings.prune_epochs + settings.finetune_epochs, prune,
                     log=log, phase="dense (same epochs)", seed=settings.seed + 3)
        dense_same = accuracy(longer, data.test_x, data.test_y)

    log("timing the pruned convolutions' real patterns")
    gsl_set = {n for n, st in pruner.layers.items() if st.kind == "conv" and "restored" not in st.reason}
    timing = time_patterns(weights, shapes, profile, out_dir / "timing_gsl", settings.timing_repeats)
    per_layer, net_speedup = network_speed(timing, gsl_set)
    layer_rows = []
    for name, g in guidance.items():
        st = pruner.layers.get(name)
        measured = per_layer.set_index("layer")["speedup"].get(name, np.nan)
        layer_rows.append({"layer": name, "shape": str(shapes[name].spec(1).weight_shape),
                           "in_pruned_set": g.prune, "why": st.reason if st else g.reason,
                           "sweet_spot_lower": g.lower, "sweet_spot_upper": g.upper,
                           "target": g.target, "sparsity": sparsity(model_gsl.get_submodule(name).weight),
                           "predicted_speedup": speedup(shapes[name], sparsity(
                               model_gsl.get_submodule(name).weight)),
                           "measured_speedup": measured})
    layers_table = pd.DataFrame(layer_rows)
    layers_table.to_csv(out_dir / "layers.csv", index=False)
    pd.DataFrame(history).to_csv(out_dir / "history.csv", index=False)
    summary = {"dense_accuracy": dense_acc, "gsl": {
        "accuracy_after_pruning": pruned_acc, "accuracy_after_finetune": final_acc,
        "conv_speedup_measured": net_speedup, "layers": per_layer.to_dict("records")},
        "model": speedup.source, "settings": asdict(settings), "prune_settings": asdict(prune)}

    if unguided is not None:
        uniform, pruned_u, final_u, weights_u = unguided
        timing_u = time_patterns(weights_u, shapes, profile, out_dir / "timing_unguided",
                                 settings.timing_repeats)
        per_layer_u, net_u = network_speed(timing_u, set(shapes))  # all pruned, all sparse
        summary["unguided"] = {"uniform_sparsity": uniform, "accuracy_after_pruning": pruned_u,
                               "accuracy_after_finetune": final_u, "conv_speedup_measured": net_u,
                               "layers": per_layer_u.to_dict("records")}
    if dense_same is not None:
        summary["dense_accuracy_same_epochs"] = dense_same
    summary["seconds"] = time.time() - started
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    plot_history(pd.DataFrame(history), out_dir, dense_acc)
    return summary


def plot_history(history: pd.DataFrame, out_dir: Path, dense_acc: float) -> None:
    from .. import plots  # matplotlib set up for files
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
