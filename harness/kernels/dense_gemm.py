"""Dense im2col + SGEMM, the paper's dense baseline. The GEMM is numpy's matmul, i.e. the
BLAS numpy is linked against (OpenBLAS for PyPI wheels), limited to the call's thread count;
``describe()`` records which library and settings ran."""

from __future__ import annotations

import numpy as np

from harness.machine.blas import blas_info, blas_threads, numpy_blas
from harness.machine.caps import openblas_level
from harness.kernels.lowering import Im2colConv


class DenseGemmConv(Im2colConv):
    method = "dense_gemm"
    dense = True
    native = True  # im2col is the project's C

    def __init__(self, w, bias, spec, *, relu, threads, kernels=None, relu_max=None, **_):
        super().__init__(bias, spec, relu=relu, threads=threads, kernels=kernels,
                         relu_max=relu_max)
        g = spec.groups
        # a copy: a later change to the caller's array must not change the convolution
        self._w = w.reshape(g, spec.out_channels // g, spec.reduction_length).copy()

    def _threads_context(self):
        return blas_threads(self.threads)

    def _multiply(self, cols, out_groups):
        with np.errstate(invalid="ignore"):  # 0 x Inf is NaN, as in torch: no warning
            np.matmul(self._w, cols, out=out_groups)

    def describe(self) -> dict:
        lib = numpy_blas()  # the copy np.matmul runs on, not scipy's or torch's
        level = openblas_level(lib["architecture"]) if lib and \
            lib["internal_api"] == "openblas" else None
        return {"blas": blas_info(), "isa": level}
