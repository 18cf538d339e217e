"""Lowered sparse convolution through a library SpMM: im2col, then scipy.sparse's CSR x dense
product (single-threaded), the kind of generic library routine the paper's lowered baseline
(MKL csrmm) was. Available when scipy is installed."""

from __future__ import annotations

import numpy as np

from ..errors import HarnessError
from . import native
from .base import PreparedConv


class LoweredScipyConv(PreparedConv):
    method = "lowered_scipy"

    def __init__(self, w, bias, spec, *, relu, threads, kernels=None, **_):
        super().__init__(spec, relu=relu, threads=threads)
        try:
            import scipy.sparse as sp
        except ImportError:
            raise HarnessError("method 'lowered_scipy' needs scipy") from None
        self.built = native.resolve(kernels)
        g, k = spec.groups, spec.reduction_length
        mg = spec.out_channels // g
        self._mats = [sp.csr_matrix(w[i * mg:(i + 1) * mg].reshape(mg, k)) for i in range(g)]
        self._bias = None if bias is None else bias.reshape(g, mg, 1).copy()
        npix = spec.out_height * spec.out_width
        self._cols = np.empty((g, k, npix), dtype=np.float32)
        self._cols_ptr = native.float_ptr(self.built, self._cols)

    def _run(self, x, out):
        spec = self.spec
        view = out.reshape(spec.batch, spec.groups, -1, spec.out_height * spec.out_width)
        for n in range(spec.batch):
            native.im2col(self.built, native.float_ptr(self.built, x[n]), spec,
                          self._cols_ptr, 1)  # the SpMM is single-threaded too
            for g, mat in enumerate(self._mats):
                view[n, g] = mat @ self._cols[g]
        if self._bias is not None:
            view += self._bias
        if self.relu:
            np.maximum(out, 0.0, out=out)

    def describe(self) -> dict:
        import scipy
        return {"scipy": scipy.__version__, "threads_used": 1}
