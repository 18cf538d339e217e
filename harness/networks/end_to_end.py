"""Whole-network latency: the sparsified network against every dense runtime here, timed side
by side in one run, with a breakdown of the sparsified network's time by kind of layer."""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from harness.models.prepared import prepared_time
from harness.networks.pruning import prune_convolutions
from harness.networks.runtimes import dense_runners
from harness.networks.sparsify import SparseNetwork, sparsify
from harness.timing import POOL_SPIN_S, interleaved_medians, measure

SPARSE = "sparsified"


@dataclass
class Breakdown:
    """Where the sparsified network's time goes, as means over profiled calls: fused
    convolutions run sparse, those run dense, and everything else."""
    total_s: float
    sparse_conv_s: float
    dense_conv_s: float
    other_s: float
    overhead_us_per_layer: float  # Python around each fused convolution's kernel, per call
    layers: list[dict] = field(default_factory=list)


def profile(network: SparseNetwork, example: torch.Tensor, calls: int = 5) -> Breakdown:
    totals = network.profiled_calls(example, calls)
    layers, sparse, dense, overheads = [], 0.0, 0.0, []
    for layer in network.layers():
        t = layer.times
        per_call, kernel = t.total_s / calls, t.kernel_s / calls
        overheads.append((per_call - kernel) * 1e6)
        if layer.sparse:
            sparse += per_call
        else:
            dense += per_call
        c = layer.conv
        layers.append({"layer": c.name, "run": layer.runner,
                       "density": round(float(np.count_nonzero(c.weight)) / c.weight.size, 4),
                       "time_ms": per_call * 1e3, "kernel_ms": kernel * 1e3,
                       **{f"decide_{runner}_ms": seconds * 1e3
                          for runner, seconds in t.decided.items()},
                       **{f"in_network_{runner}_ms": seconds * 1e3
                          for runner, seconds in t.in_network.items()}})
    total = float(np.mean(totals))
    return Breakdown(total, sparse, dense, max(0.0, total - sparse - dense),
                     float(np.median(overheads)) if overheads else 0.0, layers)


def _time_runtime(run, min_time: float) -> float:
    """One runtime's median, after a pause and two warm-up calls: the runtime timed before it
    (its thread pool, its caches) slows the next one for a while, even on one thread (on a
    2-vCPU host, the sparsified ResNet-50 ran up to 25% slower just after ONNX Runtime)."""
    time.sleep(POOL_SPIN_S)
    return measure(run, repeats=3, min_time=min_time, warmup=2).median


@dataclass
class Case:
    network: str
    sparsity: float
    batch: int
    threads: int


def time_case(case: Case, model: torch.nn.Module, example: torch.Tensor, *,
              choice: str = "auto", tune: str = "cached", rounds: int = 3, min_time: float = 0.2,
              workdir: Path | None = None, pruned: bool = False,
              pointwise_only: bool = False, predictor=None, costs=None) -> dict:
    """One row: the model pruned to ``case.sparsity`` (every convolution but the first, or its
    1x1 ones only, by magnitude; ``pruned`` keeps the weights as given), sparsified, and timed
    against the dense runtimes on the same weights, interleaved in ``rounds`` rounds.
    ``predictor`` (a harness.models.speedup.ModelSpeedup) adds the model's predictions."""
    model = copy.deepcopy(model).eval()
    if not pruned and case.sparsity > 0:
        prune_convolutions(model, case.sparsity, pointwise_only=pointwise_only)
    network = sparsify(model, example, threads=case.threads, choice=choice, tune=tune)
    with torch.no_grad():
        reference = model(example)
    out = network(example)
    error = float((out - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
    workdir = workdir or Path(tempfile.mkdtemp(prefix="spconv-e2e-"))
    runners = dense_runners(model, example, case.threads, workdir)
    runners[SPARSE] = lambda: network(example)
    medians = interleaved_medians(runners, lambda name: _time_runtime(runners[name], min_time),
                                  rounds)
    torch_best = min((k for k in medians if k.startswith("torch_")), key=medians.get)
    breakdown = profile(network, example)
    row = {"network": case.network, "sparsity": case.sparsity, "batch": case.batch,
           "threads": case.threads, "sparse_layers": sum(l.sparse for l in network.layers()),
           "layers": len(network.layers()), "relative_error": error,
           **{f"{name}_ms": t * 1e3 for name, t in medians.items()},
           "torch_best": torch_best, "torch_best_ms": medians[torch_best] * 1e3,
           "speedup_vs_torch": medians[torch_best] / medians[SPARSE],
           "sparse_conv_ms": breakdown.sparse_conv_s * 1e3,
           "dense_conv_ms": breakdown.dense_conv_s * 1e3, "other_ms": breakdown.other_s * 1e3,
           "overhead_us_per_layer": breakdown.overhead_us_per_layer}
    for name in ("onnxruntime", "deepsparse"):
        if name in medians:
            row[f"speedup_vs_{name}"] = medians[name] / medians[SPARSE]
    if predictor is not None:
        row.update(predict(network, breakdown, predictor, case, costs))
    row["per_layer"] = breakdown.layers
    return row


def predict(network: SparseNetwork, breakdown: Breakdown, predictor, case: Case,
            costs=None) -> dict:
    """The performance model's time for each fused layer as it runs, added to
    ``breakdown.layers``: a sparse layer's kernels as prepared, priced by the mechanistic
    models from ``costs`` (a harness.models.mechanistic.KernelCosts of the build's calibration;
    where None, or for a kernel they do not describe, ``predictor``'s time at the layer's
    density), a dense layer's by the timing alone that chose its runtime (a dense library's
    speed is its own; where the choice was not timed, ``predictor``'s, a
    harness.models.speedup.ModelSpeedup). The network's predicted time is their sum plus the
    measured time of the other operations."""
    total, missing, priced, timed = 0.0, 0, 0, 0
    for layer, entry in zip(network.layers(), breakdown.layers):
        seconds = None
        if layer.sparse and costs is not None:
            times = [prepared_time(costs, k, layer.residual)
                     for k in layer.prepared_kernels()]
            if times and None not in times:
                seconds, priced = sum(times) / len(times), priced + 1
        elif not layer.sparse and layer.runner in layer.times.decided:
            seconds, timed = layer.times.decided[layer.runner], timed + 1
        if seconds is None:
            try:
                shape = layer.conv.layer_shape(case.network)
            except HarnessError:  # a geometry the models do not describe
                entry["predicted_ms"] = None
                missing += 1
                continue
            sparsity = 1.0 - entry["density"]
            seconds = case.batch * (predictor.sparse_time(shape, min(sparsity, 0.999))
                                    if layer.sparse else predictor.dense_time(shape))
        entry["predicted_ms"] = seconds * 1e3
        total += entry["predicted_ms"]
    predicted = total + breakdown.other_s * 1e3
    sources = []
    if priced:
        sources.append(f"mechanistic model of the build's calibration ({priced} sparse layers)")
    if timed:
        sources.append(f"timed alone when chosen ({timed} dense layers)")
    if priced + timed < len(breakdown.layers) - missing:
        sources.append(f"{predictor.source} (the others)" if sources else predictor.source)
    source = "; ".join(sources)
    return {"predicted_conv_ms": total, "predicted_ms": predicted,
            "layers_not_predicted": missing, "model": source}
