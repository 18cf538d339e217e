"""Per-layer guidance for pruning: each convolution's sweet spot and projected speedup on a
profile, from the fitted model of that profile's latest sweep, or else the paper's model."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.models.fitted import GAIN_LIMIT, FittedModel, crossing
from harness.conv.layers import LayerShape
from harness.models.paper import PaperModel
from harness.store.runs import MODEL_FIT, read_model_fit
from harness.machine.profiles import Profile

TOP = 0.98               # highest sparsity considered
MIN_SPEEDUP = 1.3        # a layer projected to gain less is not worth the accuracy it costs


@dataclass(frozen=True)
class LayerGuidance:
    name: str
    lower: float          # sparsity where sparse starts to beat dense
    upper: float          # sparsity past which more buys < 10% speed
    target: float         # the pruning target (upper, capped)
    speedup_at_target: float
    prune: bool
    reason: str


PAPER_ALPHA = 3.0  # the paper's Broadwell value, for a profile that has none


def _with_model_numbers(profile: Profile) -> tuple[Profile, str]:
    """The profile with what the paper's model needs: peak and bandwidth from the host's
    calibration when the profile has none, alpha from the paper when it has none."""
    note = ""
    if not profile.peak_sgemm_gflops or not profile.stream_gbps:
        from harness.machine.calibrate import calibrated_profile, calibration
        from harness.machine.hostinfo import detect_host
        from harness.kernels.native import host_kernels
        profile = calibrated_profile(profile, calibration(host_kernels(), detect_host(), 1))
        note += ", peak and bandwidth calibrated on this host"
    if profile.alpha is None:
        profile = dataclasses.replace(profile, alpha=PAPER_ALPHA)
        note += f", alpha {PAPER_ALPHA} (the paper's Broadwell value; run a sweep to fit)"
    return profile, note


class ModelSpeedup:
    """speedup(layer, sparsity) of whichever model guides the pruning."""

    def __init__(self, profile: Profile, results_root: Path = Path("results"), threads: int = 1,
                 fit_file: Path | None = None):
        self.threads = threads
        self.fitted, self.source = None, ""
        runs = [fit_file] if fit_file is not None and fit_file.exists() else sorted(
            results_root.glob(f"{profile.name}-*/{MODEL_FIT}"), key=lambda p: p.stat().st_mtime)
        if runs:
            self.fitted = FittedModel.from_json(read_model_fit(runs[-1]))
            self.source = f"fitted model of {runs[-1].parent}"
            return
        profile, note = _with_model_numbers(profile)
        self.paper = PaperModel(profile)
        self.source = f"paper model of profile {profile.name}{note}"

    def __call__(self, layer: LayerShape, sparsity: float) -> float:
        if self.fitted is not None:
            spec = layer.spec(1)
            cls = f"k{layer.kernel}s{layer.stride}"
            return self.fitted.speedup(spec, sparsity, self.threads, cls, (layer.key, 1, self.threads))
        return self.paper.speedup(layer, sparsity)

    def sparse_time(self, layer: LayerShape, sparsity: float) -> float:
        """Seconds per image of direct sparse convolution at ``sparsity``."""
        if self.fitted is not None:
            return self.fitted.sparse_time(layer.spec(1), sparsity, self.threads,
                                           f"k{layer.kernel}s{layer.stride}")
        return max(self.paper.times(layer, sparsity)[1:])


def guide(layers: dict[str, LayerShape], speedup, max_target: float = 0.95) -> dict[str, LayerGuidance]:
    """Sweet spot, target and whether to prune, for every layer."""
    out = {}
    for name, layer in layers.items():
        def f(s, layer=layer):
            return speedup(layer, s)
        lower = crossing(f, 0.0, TOP, 1.0)
        limit = f(TOP)
        upper = crossing(lambda s: f(s) * GAIN_LIMIT, 0.0, TOP, limit)
        if not np.isfinite(lower):
            out[name] = LayerGuidance(name, lower, upper, 0.0, limit, False,
                                      f"never faster than dense (at most {limit:.2f}x at {TOP:.0%})")
            continue
        target = min(upper, max_target)
        gain = f(target)
        if gain < MIN_SPEEDUP:
            out[name] = LayerGuidance(name, lower, upper, 0.0, gain, False,
                                      f"projected speedup {gain:.2f}x < {MIN_SPEEDUP}x at its target")
            continue
        reason = "in sweet spot" + (f" (target capped at {max_target})" if upper > max_target else "")
        out[name] = LayerGuidance(name, lower, upper, target, gain, True, reason)
    return out


def weight_count(layer: LayerShape) -> int:
    return math.prod(layer.spec(1).weight_shape)


def allocate_for_time(guidance: dict[str, LayerGuidance], layers: dict[str, LayerShape],
                      sparse_time, steps: int = 200) -> dict[str, LayerGuidance]:
    """Re-spread the pruned layers' targets to minimise the predicted time of the network while
    it keeps as many weights as the sweet-spot targets leave, each layer within its sweet spot.

    A weight costs time in proportion to the output pixels it is applied to (16x more at 28x28
    than at 7x7), so at equal remaining weights the wide layers should be pruned harder.
    ``sparse_time(layer, s)`` is the model's time. Greedy exchange: every layer starts at its
    upper bound; the weights are given back one grid step at a time to the layer whose step adds
    the least time per weight, until the budget is kept."""
    chosen = {n: g for n, g in guidance.items() if g.prune}
    if len(chosen) < 2:
        return guidance
    grids, times, sizes = {}, {}, {}
    for name, g in chosen.items():
        lo = max(g.lower, 0.0) if np.isfinite(g.lower) else 0.0
        grids[name] = np.linspace(max(g.upper, g.target), lo, steps)  # sparsest first
        times[name] = np.array([sparse_time(layers[name], s) for s in grids[name]])
        sizes[name] = weight_count(layers[name])
    budget = sum((1 - g.target) * sizes[n] for n, g in chosen.items())
    at = dict.fromkeys(chosen, 0)

    def kept() -> float:
        return sum((1 - grids[n][i]) * sizes[n] for n, i in at.items())

    while kept() < budget:
        def cost(n):
            i = at[n]
            added = (grids[n][i] - grids[n][i + 1]) * sizes[n]
            return (times[n][i + 1] - times[n][i]) / added
        movable = [n for n in chosen if at[n] + 1 < steps and grids[n][at[n]] > grids[n][at[n] + 1]]
        if not movable:
            break
        at[min(movable, key=cost)] += 1
    targets = {n: float(grids[n][i]) for n, i in at.items()}
    out = dict(guidance)
    for name, s in targets.items():
        g = chosen[name]
        gain = g.speedup_at_target * sparse_time(layers[name], g.target) / sparse_time(layers[name], s)
        out[name] = dataclasses.replace(g, target=s, speedup_at_target=gain,
                                        reason="in sweet spot; target set where the remaining "
                                        "weights cost the least time")
    return out
