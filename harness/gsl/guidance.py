"""Per-layer guidance for pruning: each convolution's sweet spot and projected speedup on a
profile, from the fitted model of that profile's latest sweep, or else the paper's model."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from harness.models.curves import GAIN_LIMIT, crossing
from harness.conv.layers import LayerShape

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
    eligible: bool = True  # False: never pruned, not even by the uniform comparison


def guide(layers: dict[str, LayerShape], speedup, max_target: float = 0.95) -> dict[str, LayerGuidance]:
    """Sweet spot, target and whether to prune, for every layer (in the order they run). The
    first convolution stays dense: it reads the image through a handful of weights per output
    channel, which pruning cannot spare, and it is cheap."""
    out = {}
    for i, (name, layer) in enumerate(layers.items()):
        if i == 0:
            out[name] = LayerGuidance(name, math.nan, math.nan, 0.0, 1.0, False,
                                      "first layer: kept dense", eligible=False)
            continue
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
                      sparse_time, cap: float = TOP, steps: int = 200) -> dict[str, LayerGuidance]:
    """Re-spread the pruned layers' targets to minimise the predicted time of the network while
    it keeps as many weights as the sweet-spot targets leave, each layer within its sweet spot
    and at most ``cap`` (a layer pruned far past the others costs accuracy the model does not
    see).

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
        grids[name] = np.linspace(max(g.target, min(g.upper, cap)), lo, steps)  # sparsest first
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
