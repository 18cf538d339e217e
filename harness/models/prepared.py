"""The mechanistic models' time for a prepared sparse kernel, as it was prepared: the direct
kernel with its plan (harness.models.mechanistic), the pointwise kernel with its chunks and
blocks (harness.models.pointwise_model)."""

from __future__ import annotations

from harness.conv.weights import group_pattern
from harness.kernels.base import PreparedConv
from harness.kernels.direct import DirectSparseConv
from harness.kernels.pointwise import PointwiseSparseConv
from harness.models.mechanistic import KernelCosts, direct_time
from harness.models.pointwise_model import pointwise_time


def prepared_time(costs: KernelCosts, kernel: PreparedConv,
                  residual: bool = False) -> float | None:
    """Predicted seconds of one call of ``kernel`` (adding a ``residual``, for the kernels
    that fuse one); None for a kind no model describes."""
    spec = kernel.spec
    if not isinstance(kernel, (DirectSparseConv, PointwiseSparseConv)):
        return None
    density = kernel.nnz / (spec.out_channels * spec.reduction_length)
    if isinstance(kernel, DirectSparseConv):
        # out_group > 1 only for weights whose groups share a support
        return direct_time(costs, spec, density, kernel.plan, kernel.threads,
                           group_pattern(kernel.plan.out_group))["total_s"]
    return pointwise_time(costs, spec, density, kernel.chunk, kernel.channel_block,
                          kernel.out_block, kernel.threads, residual,
                          in_place=kernel.in_place)["total_s"]
