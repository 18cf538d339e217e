"""Dense im2col + SGEMM, the paper's dense baseline. The GEMM is numpy's matmul, i.e. the
BLAS numpy is linked against (OpenBLAS for PyPI wheels), limited to the call's thread count;
``describe()`` records which library and settings ran."""

from __future__ import annotations

import numpy as np

from ..blas import blas_info, blas_threads
from . import native
from .base import PreparedConv


class DenseGemmConv(PreparedConv):
    method = "dense_gemm"

    def __init__(self, w, bias, spec, *, relu, threads, kernels=None, **_):
        super().__init__(spec, relu=relu, threads=threads)
        self.built = native.resolve(kernels)
        g, k = spec.groups, spec.reduction_length
        self._w = np.ascontiguousarray(w.reshape(g, spec.out_channels // g, k))
        self._bias = None if bias is None else bias.reshape(g, -1, 1).copy()
        npix = spec.out_height * spec.out_width
        self._cols = np.empty((g, k, npix), dtype=np.float32)
        self._cols_ptr = native.float_ptr(self.built, self._cols)

    def _run(self, x, out):
        spec = self.spec
        npix = spec.out_height * spec.out_width
        out_view = out.reshape(spec.batch, spec.groups, -1, npix)
        with blas_threads(self.threads):
            for n in range(spec.batch):
                # One thread: OpenMP workers left spinning after a parallel im2col would
                # compete with the BLAS's own threads for the same cores.
                native.im2col(self.built, native.float_ptr(self.built, x[n]), spec,
                              self._cols_ptr, 1)
                np.matmul(self._w, self._cols, out=out_view[n])
        if self._bias is not None:
            out_view += self._bias
        if self.relu:
            np.maximum(out, 0.0, out=out)

    def describe(self) -> dict:
        return {"blas": blas_info()}
