"""The part the numpy-side lowered methods share: im2col of each image into one buffer, a
per-group product written into the output, then bias and ReLU."""

from __future__ import annotations

import contextlib

import numpy as np

from harness.kernels import native
from harness.kernels.base import PreparedConv


class Im2colConv(PreparedConv):
    """Subclasses implement ``_multiply(cols, out_groups)``: cols is (groups, K, pixels), the
    image's lowered input; out_groups the (groups, M / groups, pixels) view of its output."""

    def __init__(self, bias, spec, *, relu, threads, kernels=None, relu_max=None):
        super().__init__(spec, relu=relu, threads=threads, relu_max=relu_max)
        self.built = native.resolve(kernels)
        self._bias = None if bias is None else bias.reshape(spec.groups, -1, 1).copy()
        npix = spec.out_pixels
        self._cols = np.empty((spec.groups, spec.reduction_length, npix), dtype=np.float32)
        self._cols_ptr = native.float_ptr(self.built, self._cols)

    def _threads_context(self):
        """Held while the products run (a BLAS thread limit, say)."""
        return contextlib.nullcontext()

    def _multiply(self, cols: np.ndarray, out_groups: np.ndarray) -> None:
        raise NotImplementedError

    def _run(self, x, out):
        spec = self.spec
        view = out.reshape(spec.batch, spec.groups, -1, spec.out_pixels)
        with self._threads_context():
            for n in range(spec.batch):
                # One thread: OpenMP workers left spinning after a parallel im2col would
                # compete with a BLAS's own threads for the same cores.
                native.im2col(self.built, native.float_ptr(self.built, x[n]), spec,
                              self._cols_ptr, 1)
                self._multiply(self._cols, view[n])
        if self._bias is not None:
            view += self._bias
        if self.relu:
            np.maximum(out, 0.0, out=out)
