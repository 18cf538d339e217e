"""End to end, for each of several seeds: dense training to convergence (or a checkpoint),
guided pruning with fine-tuning, an unguided comparison at the same number of weights, the
dense model trained for the same total budget; then the measured speed of the pruned
convolutions' real sparsity patterns, the pruned networks run whole with sparse convolutions,
and the accuracies as mean and standard deviation over the seeds."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from torch import nn

from harness.conv.layers import LayerShape
from harness.errors import HarnessError
from harness.gsl.datasets import ImageData, hold_out_validation
from harness.gsl.guidance import LayerGuidance, allocate_for_time, guide
from harness.gsl.measure import end_to_end, network_speed, sweep_own_layers, time_patterns
from harness.gsl.network import build_network, conv_shapes
from harness.gsl.pruning import GuidedPruner, sparsity
from harness.gsl.settings import GSLSettings, PruneSettings, TrainSettings
from harness.gsl.stages import StageRecord
from harness.gsl.summary import aggregate
from harness.gsl.training import accuracy, train_epochs
from harness.machine.profiles import Profile
from harness.models.speedup import ModelSpeedup


def conv_weights(model) -> dict[str, np.ndarray]:
    return {n: m.weight.detach().numpy().copy() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d)}


def conv_sparsity(weights: dict[str, np.ndarray]) -> float:
    """The convolutions' zero weights over all their weights (a mean weighted by size)."""
    return 1 - sum(np.count_nonzero(w) for w in weights.values()) / sum(w.size for w in weights.values())


def save_convs(path: Path, weights: dict[str, np.ndarray], shapes: dict[str, LayerShape]) -> None:
    """The convolutions' weights as an .npz named by layer, the form sweeps load (--weights)."""
    np.savez(path, **{shapes[n].name: w for n, w in weights.items() if n in shapes})


LOADER = '''"""The pruned network of a GSL run: spconv sweep --model {name}.py (its layers, with these
weights) or spconv e2e --model {name}.py --prune none (the whole network)."""
from pathlib import Path

import torch

from harness.gsl.network import build_network


def model(batch=1):
    net = build_network({network!r}, classes={classes}, width={width}, in_channels={channels})
    net.load_state_dict(torch.load(Path(__file__).with_name("{name}.pt"), weights_only=True))
    return net.eval(), torch.zeros(batch, {channels}, {height}, {height})
'''


def save_network(model: nn.Module, seed_dir: Path, name: str, spec: dict) -> None:
    """The state dict, and a model file that the sweep and the end-to-end command read."""
    torch.save(model.state_dict(), seed_dir / f"{name}.pt")
    (seed_dir / f"{name}.py").write_text(LOADER.format(name=name, **spec))


def record_of(model: nn.Module, data: ImageData, chosen: dict, **extra) -> dict:
    return {"test_accuracy": accuracy(model, data.test_x, data.test_y),
            "val_accuracy": chosen["val_accuracy"], "epoch": chosen["epoch"], **extra}


def load_checkpoint(model: nn.Module, checkpoint: Path) -> None:
    try:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    except Exception as exc:  # torch raises many types for a bad or mismatched file
        raise HarnessError(f"{checkpoint}: not a state dict of this network ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]})") from None


class SeedRun:
    """The trainings of one seed, each stage recorded in ``seed_dir`` as it finishes (weights
    saved before the record), so a rerun resumes after the last finished stage."""

    def __init__(self, seed: int, make_model, data: ImageData,
                 settings: GSLSettings, train: TrainSettings, prune: PruneSettings,
                 seed_dir: Path, run_settings: dict, spec: dict, log):
        self.seed, self.data, self.settings, self.train, self.prune = seed, data, settings, train, prune
        self.dir, self.spec, self.log = seed_dir, spec, log
        seed_dir.mkdir(parents=True, exist_ok=True)
        self.stages = StageRecord(seed_dir, {**run_settings, "seed": seed})
        if self.stages.finished:
            log(f"seed {seed}: resuming, finished before: {', '.join(self.stages.finished)}")
        torch.manual_seed(seed)
        self.model = make_model()

    def _load(self, name: str) -> nn.Module | None:
        path = self.dir / f"{name}.pt"
        if self.stages.get(name) is None or not path.exists():
            return None
        model = copy.deepcopy(self.model)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.log(f"seed {self.seed} {name}: finished before, loaded from {path}")
        return model

    def dense(self, checkpoint: Path | None) -> dict:
        """Load or train the dense model (in place)."""
        saved = self._load("dense")
        if saved is not None:
            self.model = saved
            return self.stages.get("dense")
        if checkpoint is not None:
            load_checkpoint(self.model, checkpoint)
            self.log(f"dense model loaded from {checkpoint}")
            chosen = {"epoch": 0, "val_accuracy": accuracy(self.model, self.data.val_x, self.data.val_y)}
        else:
            chosen = train_epochs(self.model, self.data, self.settings.dense_epochs, self.train,
                                  kind="warmup", seed=self.seed * 1000, log=self.log,
                                  phase=f"seed {self.seed} dense")
        record = record_of(self.model, self.data, chosen)
        torch.save(self.model.state_dict(), self.dir / "dense.pt")
        self.stages.record("dense", record)
        self.log(f"seed {self.seed} dense: test accuracy {record['test_accuracy']:.2f}% "
                 f"(validation {record['val_accuracy']:.2f}%, epoch {record['epoch']})")
        return record

    def teacher(self) -> nn.Module | None:
        """A copy of the dense model (only run, never trained) whose soft targets the later
        stages learn from where ``distill`` is set: the dense model of the same budget as much
        as the pruned ones, so that it stays the same procedure less the pruning."""
        return copy.deepcopy(self.model).eval() if self.train.distill > 0 else None

    def dense_same_budget(self) -> dict:
        """The dense model trained on for as many epochs as pruning and fine-tuning take, with
        the same rewound schedule: the fair dense reference for the pruned networks."""
        if self.stages.get("dense_same_budget") is not None:
            return self.stages.get("dense_same_budget")
        longer = copy.deepcopy(self.model)
        chosen = train_epochs(longer, self.data, self.settings.prune_epochs + self.settings.finetune_epochs,
                              self.train, kind="rewind", seed=self.seed * 1000 + 3, log=self.log,
                              phase=f"seed {self.seed} dense (same budget)",
                              teacher=self.teacher())
        record = record_of(longer, self.data, chosen)
        self.stages.record("dense_same_budget", record)
        return record

    def pruned(self, stage: str, guidance: dict[str, LayerGuidance],
               uniform_target: float | None = None) -> tuple[nn.Module, dict]:
        """Prune a copy of the dense model (guided, or every layer to ``uniform_target``) while
        it trains on a rewound schedule, then fine-tune it with the masks fixed."""
        saved = self._load(f"pruned_{stage}")
        if saved is not None:
            return saved, self.stages.get(f"pruned_{stage}")
        s = self.settings
        model = copy.deepcopy(self.model)
        steps = s.prune_epochs * -(-len(self.data.train_x) // self.train.batch_size)
        pruner = GuidedPruner(model, guidance, self.prune, steps, uniform_target)
        history: list = []
        chosen = train_epochs(model, self.data, s.prune_epochs + s.finetune_epochs, self.train,
                              kind="rewind", pruner=pruner, prune_epochs=s.prune_epochs,
                              seed=self.seed * 1000 + (1 if uniform_target is None else 2),
                              log=self.log, phase=f"seed {self.seed} {stage}", history=history,
                              teacher=self.teacher())
        weights = conv_weights(model)
        record = record_of(model, self.data, chosen, conv_sparsity=conv_sparsity(weights),
                           layers={n: {"kind": st.kind, "reason": st.reason}
                                   for n, st in pruner.layers.items()},
                           history=history)
        if uniform_target is not None:
            record["uniform_sparsity"] = uniform_target
        save_network(model, self.dir, f"pruned_{stage}", self.spec)
        pd.DataFrame(history).to_csv(self.dir / f"history_{stage}.csv", index=False)
        self.stages.record(f"pruned_{stage}", record)
        self.log(f"seed {self.seed} {stage}: test accuracy {record['test_accuracy']:.2f}% at "
                 f"convolution sparsity {record['conv_sparsity']:.3f}")
        return model, record


def guidance_for(shapes: dict[str, LayerShape], profile: Profile, settings: GSLSettings,
                 out_dir: Path, results_root: Path, log) -> tuple[dict[str, LayerGuidance], ModelSpeedup]:
    fit_file = None
    if settings.sweep_layers:
        log("sweeping the network's own convolution shapes to fit the performance model")
        fit_file = sweep_own_layers(shapes, profile, out_dir / "layer_sweep", settings.timing_repeats)
    speedup = ModelSpeedup(profile, results_root, fit_file=fit_file)
    guidance = guide(shapes, speedup, settings.max_target)
    if settings.allocation == "time":
        guidance = allocate_for_time(guidance, shapes, speedup.sparse_time, settings.layer_cap)
    log(f"guidance from the {speedup.source}:")
    for g in guidance.values():
        spot = "" if not g.eligible else \
            f" (sweet spot {g.lower:.3f}-{g.upper:.3f}, projected {g.speedup_at_target:.2f}x)"
        log(f"  {g.name}: {'prune to ' + format(g.target, '.3f') if g.prune else 'keep dense'}"
            f"{spot}: {g.reason}")
    return guidance, speedup


def run_gsl(spec: dict, data: ImageData, profile: Profile, out_dir: Path, *,
            train: TrainSettings, prune: PruneSettings, settings: GSLSettings,
            checkpoint: Path | None = None, log=print, results_root: Path = Path("results")) -> dict:
    """The whole run. ``spec`` names the network and its sizes (network, classes, width,
    channels, height): a fresh one is built for every seed, and the pruned networks' model
    files build it again."""

    def make_model() -> nn.Module:
        return build_network(spec["network"], spec["classes"], spec["width"], spec["channels"])
    started = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = hold_out_validation(data, settings.validation)
    run_settings = {"gsl": {k: v for k, v in asdict(settings).items() if k != "seeds"},
                    "train": asdict(train), "prune": asdict(prune),
                    "checkpoint": str(checkpoint) if checkpoint else None,
                    "train_images": len(data.train_x), "profile": profile.name, "network": spec}
    seeds = [settings.seed + i for i in range(settings.seeds)]
    for seed in seeds:  # a rerun with other settings fails now, not after the layer sweep
        StageRecord(out_dir / f"seed-{seed}", {**run_settings, "seed": seed})
    first = make_model()
    if checkpoint is not None:
        load_checkpoint(first, checkpoint)  # a bad file fails now, not after the layer sweep
    shapes = conv_shapes(first, torch.from_numpy(data.test_x[:1]), network="gsl")
    guidance, speedup = guidance_for(shapes, profile, settings, out_dir, results_root, log)

    # Train everything first, then time: timings taken back to back, on a machine no longer
    # busy training, are comparable.
    runs, models = [], {}
    for seed in seeds:
        run = SeedRun(seed, make_model, data, settings, train, prune, out_dir / f"seed-{seed}",
                      run_settings, spec, log)
        result = {"seed": seed, "dense": run.dense(checkpoint)}
        if settings.dense_same_budget:
            result["dense_same_budget"] = run.dense_same_budget()
        models[f"gsl-s{seed}"], result["gsl"] = run.pruned("gsl", guidance)
        if settings.compare_unguided:
            uniform = conv_sparsity({n: w for n, w in conv_weights(models[f"gsl-s{seed}"]).items()
                                     if guidance[n].eligible})
            log(f"seed {seed} unguided comparison: every convolution but the first pruned to "
                f"{uniform:.3f} (as many remaining convolution weights)")
            models[f"unguided-s{seed}"], result["unguided"] = run.pruned("unguided", guidance, uniform)
        runs.append(result)

    log("timing the pruned convolutions' real patterns")
    weights = {variant: conv_weights(m) for variant, m in models.items()}
    timing = time_patterns(weights, shapes, profile, out_dir / "timing", settings.timing_repeats)
    for result in runs:
        for stage in ("gsl", "unguided"):
            if stage not in result:
                continue
            variant = f"{stage}-s{result['seed']}"
            per_layer, net_speedup = network_speed(timing, variant)
            result[stage] = {k: v for k, v in result[stage].items() if k != "history"}
            result[stage]["conv_speedup_measured"] = net_speedup
            result[stage]["timed_layers"] = per_layer.to_dict("records")
            save_convs(out_dir / f"seed-{result['seed']}" / f"pruned_convs_{stage}.npz",
                       weights[variant], shapes)
            if settings.end_to_end:
                result[stage]["end_to_end"] = end_to_end(models[variant], data, variant, log,
                                                        settings.e2e_min_time)
    write_layers(out_dir / "layers.csv", guidance, shapes, speedup, runs, models)
    summary = {"seeds": seeds, "runs": runs, "aggregate": aggregate(runs),
               "model": speedup.source, "network": spec, "train_images": len(data.train_x),
               "validation_images": len(data.val_x), "settings": asdict(settings),
               "train_settings": asdict(train), "prune_settings": asdict(prune),
               "pattern": f"block:{prune.block}" if prune.block > 1 else "magnitude",
               "seconds_this_session": time.time() - started}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    history = out_dir / f"seed-{seeds[0]}" / "history_gsl.csv"
    if history.exists():
        plot_history(pd.read_csv(history), out_dir, runs[0]["dense"]["val_accuracy"])
    return summary


def write_layers(path: Path, guidance: dict[str, LayerGuidance], shapes: dict[str, LayerShape],
                 speedup: ModelSpeedup, runs: list[dict], models: dict[str, nn.Module]) -> None:
    """Per layer and seed: the guidance, the sparsity reached, predicted and measured speedup."""
    rows = []
    for result in runs:
        model = models[f"gsl-s{result['seed']}"]
        measured = {r["layer"]: r["speedup"] for r in result["gsl"]["timed_layers"]}
        for name, g in guidance.items():
            st = result["gsl"]["layers"].get(name)
            reached = sparsity(model.get_submodule(name).weight)
            rows.append({"seed": result["seed"], "layer": name,
                         "shape": str(shapes[name].spec(1).weight_shape),
                         "in_pruned_set": g.prune, "why": st["reason"] if st else g.reason,
                         "sweet_spot_lower": g.lower, "sweet_spot_upper": g.upper,
                         "target": g.target, "sparsity": reached,
                         "predicted_speedup": speedup(shapes[name], reached),
                         "measured_speedup": measured.get(shapes[name].name, np.nan)})
    pd.DataFrame(rows).to_csv(path, index=False)


def plot_history(history: pd.DataFrame, out_dir: Path, dense_val: float) -> None:
    from harness.report import plots  # matplotlib set up for files
    import matplotlib.pyplot as plt
    if history.empty:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(1, len(history) + 1)
    a1.plot(x, history["val_accuracy"], marker="o", color="#c0392b", label="GSL")
    a1.axhline(dense_val, color="black", lw=0.8, ls="--", label="dense")
    a1.set_xlabel("epoch (pruning, then fine-tuning)")
    a1.set_ylabel("validation accuracy (%)")
    a1.legend(fontsize=8)
    for col in [c for c in history.columns if c.startswith("sparsity:")]:
        a2.plot(x, history[col], marker=".", label=col.split(":", 1)[1])
    a2.set_xlabel("epoch (pruning, then fine-tuning)")
    a2.set_ylabel("sparsity (fraction of zero weights)")
    a2.set_ylim(0, 1)
    a2.legend(fontsize=7, ncols=2)
    fig.suptitle("Guided sparsity learning: accuracy and per-layer sparsity (first seed)")
    fig.tight_layout()
    plots.save(fig, out_dir, "gsl_training")
