"""The paper's roofline model of sparse vs dense convolution time, exactly as published.

Per image: C dense FLOPs, S_A bytes of input + output activations, S_W bytes of dense
weights, x density, F dense throughput (SGEMM), B memory bandwidth (STREAM):
    t_dense = C / F
    t_sparse = max(alpha * x * C / F, (S_A + beta * x * S_W) / B)
The sweet spot is the density range 1/alpha > x > x_u where compute time meets memory time,
x_u = (S_A / B) / (alpha * C / F - beta * S_W / B); returned as sparsities (1 - x).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.conv.convspec import ConvSpec
from harness.errors import HarnessError
from harness.conv.layers import LayerShape
from harness.machine.profiles import Profile
from harness.conv.sparsity import check_sparsity

FLOAT_BYTES = 4


@dataclass(frozen=True)
class LayerCost:
    """Per-image quantities of the paper's model."""

    flops: float          # C
    activation_bytes: float  # S_A
    weight_bytes: float   # S_W

    @classmethod
    def of(cls, layer: LayerShape | ConvSpec) -> "LayerCost":
        spec = layer.spec(1) if isinstance(layer, LayerShape) else layer.with_batch(1)
        inputs = spec.in_channels * spec.height * spec.width
        outputs = spec.out_channels * spec.out_height * spec.out_width
        weights = spec.out_channels * spec.reduction_length
        return cls(float(spec.dense_flops()), FLOAT_BYTES * (inputs + outputs),
                   FLOAT_BYTES * weights)


class PaperModel:
    def __init__(self, profile: Profile, *, alpha: float | None = None, beta: float | None = None):
        self.profile = profile
        self.alpha = alpha if alpha is not None else profile.alpha
        self.beta = beta if beta is not None else profile.beta
        if self.alpha is None or self.alpha <= 0:
            raise HarnessError(f"profile {profile.name} has no model alpha; give one or fit it")
        if not profile.peak_sgemm_gflops or not profile.stream_gbps:
            raise HarnessError(f"profile {profile.name} lacks peak_sgemm_gflops or stream_gbps "
                               "(run the calibration)")
        self.flops_per_s = profile.peak_sgemm_gflops * 1e9
        self.bytes_per_s = profile.stream_gbps * 1e9

    def times(self, layer, sparsity: float) -> tuple[float, float, float]:
        """(t_dense, t_sparse_compute, t_sparse_memory) in seconds per image."""
        x = 1.0 - check_sparsity(sparsity)
        c = LayerCost.of(layer)
        return (c.flops / self.flops_per_s,
                self.alpha * x * c.flops / self.flops_per_s,
                (c.activation_bytes + self.beta * x * c.weight_bytes) / self.bytes_per_s)

    def speedup(self, layer, sparsity: float) -> float:
        dense, compute, memory = self.times(layer, sparsity)
        return dense / max(compute, memory)

    def upper_density(self, layer) -> float:
        """x_u: the density below which the layer is memory-bound (more sparsity buys no speed)."""
        c = LayerCost.of(layer)
        denominator = self.alpha * c.flops / self.flops_per_s - \
            self.beta * c.weight_bytes / self.bytes_per_s
        if denominator <= 0:
            return 1.0  # memory-bound at every density
        return min(1.0, (c.activation_bytes / self.bytes_per_s) / denominator)

    def sweet_spot(self, layer) -> tuple[float, float]:
        """(lowest, highest) useful sparsity: sparse starts to win above the first and stops
        gaining beyond the second. lowest > highest means the layer has no sweet spot."""
        return 1.0 - 1.0 / self.alpha, 1.0 - self.upper_density(layer)
