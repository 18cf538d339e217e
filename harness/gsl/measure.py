"""What the pruned networks buy in speed: their convolutions' real weights timed by the sweep
(verified like every sweep) against the best dense method, the network's own layer shapes
swept to fit the model that guides the pruning, and the pruned network run whole."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from harness import kernels
from harness.conv.layers import LayerShape
from harness.gsl.datasets import ImageData
from harness.machine.hostinfo import detect_host
from harness.machine.profiles import Profile, build_target
from harness.networks.end_to_end import Case, time_case
from harness.networks.sparsify import sparsify
from harness.store.runs import MODEL_FIT, RunStore
from harness.sweep.plan import SweepConfig, plan_points
from harness.sweep.results import results_table
from harness.sweep.run import run_sweep

EVAL_BATCH = 512  # test images per call of the sparse execution
LAYER_SWEEP_SPARSITIES = [0.3, 0.5, 0.7, 0.8, 0.9, 0.95]


def timing_methods() -> list[str]:
    """What the pruned convolutions are timed with: the sparse kernels a sparsified network
    runs (the sweep times each where it applies) and every available dense method (the best
    of which is the baseline)."""
    return [*kernels.SPARSE_RUNNERS, *(m for m in kernels.methods_where(dense=True)
                                       if kernels.METHODS[m].available())]


def _sweep(cfg: SweepConfig, run_dir: Path, analyse_with=None) -> pd.DataFrame:
    store = RunStore(run_dir)
    try:
        run_sweep(cfg, store, plan_points(cfg), progress=False)
        frame = results_table(store.rows())
        store.write_table(frame)
        if analyse_with is not None:
            analyse_with(store, frame)
    finally:
        store.close()
    return frame


def time_patterns(variants: dict[str, dict[str, np.ndarray]], shapes: dict[str, LayerShape],
                  profile: Profile, run_dir: Path, repeats: int) -> pd.DataFrame:
    """Time the convolutions' real weights of every variant in one sweep, so the variants'
    points interleave on the same machine state and share their dense baselines. A layer of
    variant v is named "<layer>@v"."""
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
    return _sweep(cfg, run_dir)


def sweep_own_layers(shapes: dict[str, LayerShape], profile: Profile, run_dir: Path,
                     repeats: int) -> Path:
    """Sweep the network's own convolution shapes (random weights) and fit the model on them,
    so the guidance rests on measurements of these very layers. Returns the fit file."""
    from harness.machine.calibrate import calibration
    from harness.models.analysis import analyse
    host = detect_host()
    cfg = SweepConfig(profile=profile, target=build_target(profile), host=host,
                      layers=list(shapes.values()), sparsities=LAYER_SWEEP_SPARSITIES,
                      methods=timing_methods(), repeats=repeats, min_time=0.02)
    _sweep(cfg, run_dir, lambda store, frame: analyse(store, frame, profile,
                                                      calibration(cfg.built, host, 1)))
    return run_dir / MODEL_FIT


def network_speed(frame: pd.DataFrame, variant: str) -> tuple[pd.DataFrame, float]:
    """Per layer of ``variant``: the best dense time (the fastest dense measurement of that
    layer in any variant: dense methods ignore the weights) and the time of the sparse kernel
    harness.sparsify runs it on (the first of kernels.SPARSE_RUNNERS the sweep timed for it),
    on the variant's weights. Each layer is deployed on whichever of the two measured faster,
    as harness.sparsify does, for every variant alike. Returns the table and the convolutions'
    speedup over all-dense."""
    ok = frame[frame["status"] == "ok"]
    base = ok["layer"].str.rsplit("@", n=1).str[0]
    dense = ok[ok["dense"] == True].groupby(base)["median_s"].min()  # noqa: E712
    rows = []
    for layer, g in ok[ok["layer"].str.endswith(f"@{variant}")].groupby("layer", sort=False):
        name = layer.rsplit("@", 1)[0]
        method = next(m for m in kernels.SPARSE_RUNNERS if (g["method"] == m).any())
        sparse = g[g["method"] == method]["median_s"].min()
        rows.append({"layer": name, "sparsity": g["sparsity"].iloc[0], "best_dense_s": dense[name],
                     "sparse_method": method, "sparse_s": sparse, "speedup": dense[name] / sparse,
                     "runs_sparse": bool(sparse < dense[name]),
                     "deployed_s": min(sparse, dense[name])})
    table = pd.DataFrame(rows)
    return table, float(table["best_dense_s"].sum() / table["deployed_s"].sum())


def end_to_end(pruned: nn.Module, data: ImageData, label: str, log,
               min_time: float = 0.2) -> dict:
    """The pruned network run whole through harness.sparsify: its test accuracy as the sparse
    execution computes it, and its batch-1 latency against dense PyTorch and ONNX Runtime on
    the same weights (one thread, interleaved)."""
    example = torch.from_numpy(data.test_x[:1])
    network = sparsify(copy.deepcopy(pruned), torch.from_numpy(data.test_x[:EVAL_BATCH]))
    correct = 0
    for i in range(0, len(data.test_x), EVAL_BATCH):
        pred = network(torch.from_numpy(data.test_x[i:i + EVAL_BATCH])).argmax(1).numpy()
        correct += int((pred == data.test_y[i:i + EVAL_BATCH]).sum())
    row = time_case(Case(label, 0.0, 1, 1), pruned, example, pruned=True, min_time=min_time)
    row.pop("per_layer")
    result = {"sparse_execution_accuracy": 100.0 * correct / max(1, len(data.test_x)),
              **{k: row[k] for k in row if k.endswith("_ms") or k.startswith("speedup_vs_")
                 or k in ("torch_best", "sparse_layers", "layers")}}
    log(f"{label} end to end (batch 1, 1 thread): sparsified {row['sparsified_ms']:.3f} ms, "
        f"{row['torch_best']} {row['torch_best_ms']:.3f} ms"
        + (f", ONNX Runtime {row['onnxruntime_ms']:.3f} ms" if "onnxruntime_ms" in row else "")
        + f"; test accuracy of the sparse execution {result['sparse_execution_accuracy']:.2f}%")
    return result
