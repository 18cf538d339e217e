"""Guided pruning during training: gradual magnitude pruning on a cubic sparsity schedule
(GMP), element-wise L1 regularisation with hard thresholding (GESL), or dynamic network
surgery (GDNS); periodic re-projection of every layer against its sweet spot; fixed masks
for fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from harness.gsl.guidance import LayerGuidance
from harness.gsl.settings import PruneSettings


@dataclass
class LayerState:
    module: nn.Module
    target: float
    lower: float
    kind: str                   # "conv" or "fc"
    pruning: bool = True
    reason: str = ""
    dense: torch.Tensor | None = None   # weights before pruning, to restore
    std0: float = 1.0
    history: list = field(default_factory=list)


def magnitude(w: torch.Tensor, block: int) -> torch.Tensor:
    """Each weight's pruning score: its magnitude, or with ``block`` > 1 the L2 norm of its
    block (``block`` consecutive output channels at its input position), so a threshold keeps
    or drops a block whole. A last block of fewer channels is one block too."""
    if block == 1:
        return w.abs()
    m = w.shape[0]
    blocks = -(-m // block)
    flat = torch.zeros((blocks * block, *w.shape[1:]), dtype=w.dtype)
    flat[:m] = w
    norms = flat.reshape(blocks, block, -1).pow(2).sum(1).sqrt()
    return norms.repeat_interleave(block, 0)[:m].reshape(w.shape)


def sparsity(t: torch.Tensor) -> float:
    return float((t == 0).sum()) / t.numel()


class GuidedPruner:
    """Keeps one mask per pruned layer and applies the chosen method after every update."""

    def __init__(self, model: nn.Module, guidance: dict[str, LayerGuidance],
                 settings: PruneSettings, total_steps: int, uniform_target: float | None = None):
        self.model, self.settings, self.total = model, settings, max(1, total_steps)
        self.layers: dict[str, LayerState] = {}
        modules = dict(model.named_modules())
        for name, g in guidance.items():
            if (uniform_target is not None and g.eligible) or g.prune:
                target = uniform_target if uniform_target is not None else g.target
                lower = 0.0 if uniform_target is not None else g.lower
                self._add(name, modules[name], target, lower, "conv")
        for name, module in modules.items():
            if isinstance(module, nn.Linear):
                self._add(name, module, settings.fc_target, 0.0, "fc")
        self.masks = {n: torch.ones_like(s.module.weight, dtype=torch.bool)
                      for n, s in self.layers.items()}
        self.shadow = {n: s.module.weight.detach().clone() for n, s in self.layers.items()} \
            if settings.method == "dns" else {}

    def _add(self, name, module, target, lower, kind):
        w = module.weight.detach()
        self.layers[name] = LayerState(module, target, lower, kind, dense=w.clone(),
                                       std0=float(w.std()) or 1.0)

    def scheduled(self, state: LayerState, step: int) -> float:
        """Sparsity the layer should have by ``step``: a cubic ramp to its target over the
        first 80% of pruning, so early steps prune fast and later ones gently."""
        p = min(1.0, step / (0.8 * self.total))
        return state.target * (1 - (1 - p) ** 3)

    def penalty(self) -> torch.Tensor:
        s = self.settings
        if s.method == "gmp":
            return torch.zeros(())
        terms = [(s.l1_conv if st.kind == "conv" else s.l1_fc) * st.module.weight.abs().sum()
                 for st in self.layers.values() if st.pruning]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def _score(self, state: LayerState, weights: torch.Tensor) -> torch.Tensor:
        """The magnitudes a layer is pruned by: per block for convolutions."""
        return magnitude(weights, self.settings.block if state.kind == "conv" else 1)

    def _threshold(self, state: LayerState, score: torch.Tensor, step: int) -> float:
        goal = self.scheduled(state, step)
        if goal <= 0:
            return 0.0
        q = float(torch.quantile(score.flatten().float()[:2_000_000], goal))
        if self.settings.method == "gmp":
            return q
        return min(q, self.settings.threshold_cap * state.std0)

    def before_step(self) -> None:
        """DNS: gradients were taken at the masked weights; update the full-precision shadow."""
        for name, st in self.layers.items():
            if name in self.shadow:
                st.module.weight.data.copy_(self.shadow[name])

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        for name, st in self.layers.items():
            w = st.module.weight
            if name in self.shadow:
                self.shadow[name].copy_(w.data)
                if st.pruning:
                    mag = self._score(st, self.shadow[name])
                    a = self._threshold(st, mag, step)
                    # prune below a, splice back above 1.1 a, keep the mask in between
                    self.masks[name] = (mag >= 1.1 * a) | (self.masks[name] & (mag >= a))
            elif st.pruning:
                # pruned weights that the step moved off zero (momentum, weight decay's
                # gradient) count as zero: otherwise they take the top of the quantile and the
                # kept weights below it, and the intersection with the mask can lose them all
                mag = self._score(st, w * self.masks[name])
                self.masks[name] &= mag >= self._threshold(st, mag, step)
            w.data.mul_(self.masks[name])

    @torch.no_grad()
    def reproject(self, step: int) -> list[str]:
        """Re-check every pruned convolution against its sweet spot; returns what changed."""
        events = []
        for name, st in self.layers.items():
            if not st.pruning:
                continue
            s = sparsity(st.module.weight)
            st.history.append(s)
            if s >= st.target - 0.005:
                st.pruning, st.reason = False, f"reached target {st.target:.3f}"
                events.append(f"{name}: {st.reason}")
                continue
            window = st.history[-self.settings.stall_window - 1:]
            stalled = len(window) > self.settings.stall_window and window[-1] - window[0] < 0.005 \
                and self.scheduled(st, step) > s + 0.05
            if stalled and st.kind == "conv" and s < st.lower:
                st.module.weight.data.copy_(st.dense)
                self.masks[name].fill_(True)
                if name in self.shadow:
                    self.shadow[name].copy_(st.dense)
                st.pruning, st.reason = False, f"stalled at {s:.3f} < lower bound " \
                    f"{st.lower:.3f}: dense weights restored"
                events.append(f"{name}: {st.reason}")
            elif stalled:
                st.pruning, st.reason = False, f"stalled at {s:.3f}"
                events.append(f"{name}: {st.reason}")
        return events

    def finish(self) -> None:
        """End of pruning: masks are fixed from here on."""
        for name, st in self.layers.items():
            if name in self.shadow:
                st.module.weight.data.copy_(self.shadow[name] * self.masks[name])
            if st.pruning:
                st.pruning = False
                st.reason = st.reason or f"pruning ended at {sparsity(st.module.weight):.3f}"

    @torch.no_grad()
    def apply_masks(self) -> None:
        for name, st in self.layers.items():
            st.module.weight.data.mul_(self.masks[name])

    def sparsities(self) -> dict[str, float]:
        return {n: sparsity(st.module.weight) for n, st in self.layers.items()}
