"""Per-layer guidance for pruning: each convolution's sweet spot and projected speedup on a
profile, from the fitted model of that profile's latest sweep, or else the paper's model."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fit import GAIN_LIMIT, FittedModel, crossing
from ..layers import LayerShape
from ..model import PaperModel
from ..profiles import Profile

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
        from ..calibrate import calibrated_profile, calibration
        from ..hostinfo import detect_host
        from ..kernels.native import host_kernels
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
            results_root.glob(f"{profile.name}-*/model_fit.json"), key=lambda p: p.stat().st_mtime)
        if runs:
            self.fitted = FittedModel.from_json(json.loads(runs[-1].read_text()))
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
