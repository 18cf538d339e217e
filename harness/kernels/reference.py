"""The float64 reference convolution as a method, so it can be swept and called like the others."""

from __future__ import annotations

from harness.conv.reference import reference_conv
from harness.kernels.base import PreparedConv


class ReferenceConv(PreparedConv):
    method = "reference"
    in_default_sweep = False  # slow: it checks the others

    @classmethod
    def fuses_relu_max(cls, relu_max: float) -> bool:
        return True

    def __init__(self, w, bias, spec, *, relu, threads, relu_max=None, **_):
        super().__init__(spec, relu=relu, threads=threads, relu_max=relu_max)
        self.w, self.bias = w.copy(), None if bias is None else bias.copy()

    def _run(self, x, out):
        out[...] = reference_conv(x, self.w, self.bias, self.spec, self.relu,
                                  self.relu_max)
