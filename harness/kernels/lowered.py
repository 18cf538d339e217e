"""Lowered sparse convolution: im2col, then CSR x dense (the approach the paper beats)."""

from __future__ import annotations

import numpy as np

from harness.conv.sparsity import lowered_csr
from harness.kernels import native
from harness.kernels.native import c_kernels_fuse
from harness.kernels.base import PreparedConv


class LoweredSparseConv(PreparedConv):
    method = "lowered_sparse"
    native = True

    def __init__(self, w, bias, spec, *, relu, threads, kernels=None, tile_vectors=None,
                 relu_max=None, **_):
        super().__init__(spec, relu=relu, threads=threads, relu_max=relu_max)
        built = self.built = native.resolve(kernels)
        lib = built.lib
        npix = spec.out_pixels
        vec = lib.spconv_vector_floats()
        # im2col rows padded to whole vectors in a line-aligned buffer: every load of the
        # product is aligned, as in the direct kernel's aligned layout
        self._row_stride = npad = -(-npix // vec) * vec
        self.tile_vectors = tile_vectors or lib.spconv_max_tile_vectors()
        csr = lowered_csr(w, spec, npad)
        self.nnz = csr.nnz
        self._rowptr, self._colidx, self._values = csr.rowptr, csr.colidx, csr.values
        self._bias = None if bias is None else bias.copy()
        self._cols = native.aligned_zeros(spec.groups * spec.reduction_length * npad + vec, 64)
        self._scratch = np.zeros(threads * npad, dtype=np.float32)
        self._ptrs = (native.int_ptr(built, self._rowptr), native.int_ptr(built, self._colidx),
                      native.float_ptr(built, self._values))
        self._bias_ptr = built.ffi.NULL if self._bias is None else native.float_ptr(built, self._bias)
        self._cols_ptr = native.float_ptr(built, self._cols)
        self._scratch_ptr = native.float_ptr(built, self._scratch)
        self._act = native.activation(built, self)

    fuses_relu_max = staticmethod(c_kernels_fuse)

    def _run(self, x, out):
        built, spec = self.built, self.spec
        npix = spec.out_pixels
        for n in range(spec.batch):
            native.im2col(built, native.float_ptr(built, x[n]), spec, self._cols_ptr, self.threads,
                          self._row_stride)
            rc = built.lib.spconv_csr_spmm(
                spec.out_channels, npix, *self._ptrs, self._cols_ptr, self._bias_ptr,
                self._act, self.tile_vectors, self._scratch_ptr,
                native.float_ptr(built, out[n]), self.threads)
            native.check_rc(self.built, rc, "spconv_csr_spmm")

    def describe(self) -> dict:
        return {"tile_vectors": self.tile_vectors, "nnz": self.nnz, "isa": self.built.isa}
