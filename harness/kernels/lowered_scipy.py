"""Lowered sparse convolution through a library SpMM: im2col, then scipy.sparse's CSR x dense
product (single-threaded), the kind of generic library routine the paper's lowered baseline
(MKL csrmm) was. Available when scipy is installed."""

from __future__ import annotations

from harness.errors import HarnessError
from harness.kernels.lowering import Im2colConv


class LoweredScipyConv(Im2colConv):
    method = "lowered_scipy"
    native = True  # im2col is the project's C
    requires = ("scipy",)

    def __init__(self, w, bias, spec, *, relu, threads, kernels=None, relu_max=None, **_):
        super().__init__(bias, spec, relu=relu, threads=threads, kernels=kernels,
                         relu_max=relu_max)
        try:
            import scipy.sparse as sp
        except ImportError:
            raise HarnessError("method 'lowered_scipy' needs scipy") from None
        g, mg = spec.groups, spec.out_channels // spec.groups
        self._mats = [sp.csr_matrix(w[i * mg:(i + 1) * mg].reshape(mg, spec.reduction_length))
                      for i in range(g)]

    def _multiply(self, cols, out_groups):
        for g, mat in enumerate(self._mats):
            out_groups[g] = mat @ cols[g]

    def describe(self) -> dict:
        import scipy
        # scipy's CSR product is plain compiled C++: no vector level of its own
        return {"scipy": scipy.__version__, "threads_used": 1, "isa": "portable"}
