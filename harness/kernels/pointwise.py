"""Pointwise sparse convolution (kernels_c/pointwise.c): the direct method for 1x1 kernels at
stride 1 without padding, where the input needs no padded copy and each output channel's
non-zeros stream over the input in place."""

from __future__ import annotations

import numpy as np

from harness.errors import ShapeError
from harness.kernels import native
from harness.kernels.base import PreparedConv

L1_SLICE_BYTES = 24 * 1024  # a chunk's slice of the input (all channels), kept within L1
MIN_CHUNK_VECTORS = 4       # narrower register tiles cost more loads per FMA than L2 does
# Storing the accumulators straight from registers gained up to 21% on planes of 14x14 and
# more with few non-zeros a row, but lost 5-8% on 7x7 ones (three vectors and one lane a
# row), measured on an AMD EPYC (Zen 5, AVX-512) with bench/pointwise_store.py; below this
# many vectors a plane goes through the scratch row.
SCRATCH_BELOW_VECTORS = 4


def is_pointwise(spec) -> bool:
    return ((spec.kernel_h, spec.kernel_w) == (1, 1) and spec.stride == (1, 1)
            and spec.padding == (0, 0) and spec.groups == 1)


def default_chunk(spec, vector: int, max_tile: int) -> int:
    """Pixels per work item: the widest run of whole vectors (at most one register tile)
    whose slice of every input channel fits L1_SLICE_BYTES, but at least MIN_CHUNK_VECTORS."""
    pixels = spec.height * spec.width
    fits = L1_SLICE_BYTES // (4 * spec.in_channels * vector)
    vectors = max(MIN_CHUNK_VECTORS, min(max_tile, fits), 1)
    return vector * min(vectors, max(1, pixels // vector))


def default_out_block(spec, threads: int, chunk: int) -> int:
    """Output channels per work item: all of them, unless there are too few pixel chunks to
    give every thread several items."""
    items = spec.batch * -(-spec.height * spec.width // chunk)
    want = 4 * threads
    if items >= want:
        return spec.out_channels
    return max(1, -(-spec.out_channels // -(-want // items)))


class PointwiseSparseConv(PreparedConv):
    method = "pointwise_sparse"
    native = True

    @classmethod
    def applies(cls, spec) -> bool:
        return is_pointwise(spec)

    def __init__(self, w, bias, spec, *, relu, threads, kernels=None, chunk=None,
                 out_block=None, through_scratch: bool | None = None, **_):
        """``through_scratch`` runs the earlier form of the kernel, whose accumulators go
        through a scratch row to the output; None (default) takes it for planes shorter than
        SCRATCH_BELOW_VECTORS vectors only (see that constant)."""
        super().__init__(spec, relu=relu, threads=threads)
        if not is_pointwise(spec):
            raise ShapeError("pointwise_sparse runs 1x1 convolutions at stride 1 without "
                             f"padding in one group, not {spec.kernel_h}x{spec.kernel_w} "
                             f"stride {spec.stride} padding {spec.padding} groups {spec.groups}")
        built = self.built = native.resolve(kernels)
        ffi, lib = built.ffi, built.lib
        vector, max_tile = lib.spconv_vector_floats(), lib.spconv_max_tile_vectors()
        pixels = spec.height * spec.width
        self.chunk = chunk or default_chunk(spec, vector, max_tile)
        self.out_block = out_block or default_out_block(spec, threads, self.chunk)
        tile = max(1, min(max_tile, self.chunk // vector))
        if through_scratch is None:
            through_scratch = pixels < SCRATCH_BELOW_VECTORS * vector
        matrix = w.reshape(spec.out_channels, spec.in_channels)
        rows, channels = np.nonzero(matrix)
        self.nnz = int(rows.size)
        self._rowptr = np.zeros(spec.out_channels + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=spec.out_channels), out=self._rowptr[1:])
        self._values = np.ascontiguousarray(matrix[rows, channels], dtype=np.float32)
        self._colidx = (channels * self.chunk).astype(np.int32)
        self._bias = None if bias is None else bias.copy()
        self._scratch = native.aligned_zeros(
            lib.spconv_pointwise_scratch_floats(spec.in_channels, self.chunk, threads), 64)
        self._args = ffi.new("spconv_pointwise_args *", dict(
            batch=spec.batch, channels=spec.in_channels, out_channels=spec.out_channels,
            pixels=pixels, chunk=self.chunk, out_block=self.out_block, tile_vectors=tile,
            threads=threads, through_scratch=int(through_scratch)))
        self.through_scratch = bool(through_scratch)
        self._ptrs = (native.int_ptr(built, self._rowptr), native.int_ptr(built, self._colidx),
                      native.float_ptr(built, self._values),
                      ffi.NULL if self._bias is None else native.float_ptr(built, self._bias))
        self._scratch_ptr = native.float_ptr(built, self._scratch)

    def _run(self, x, out):
        self.run_with_residual(x, None, out)

    def run_with_residual(self, x, residual, out) -> None:
        """out = act(conv(x) + residual): a shortcut addition (and the ReLU after it) fused
        into the kernel's output step. Arrays as for run_into; residual has out's shape."""
        built = self.built
        rc = built.lib.spconv_pointwise(
            self._args, *self._ptrs, int(self.relu), native.float_ptr(built, x),
            built.ffi.NULL if residual is None else native.float_ptr(built, residual),
            self._scratch_ptr, native.float_ptr(built, out))
        native.check_rc(built, rc, "spconv_pointwise")

    def describe(self) -> dict:
        return {"chunk": self.chunk, "out_block": self.out_block, "nnz": self.nnz,
                "through_scratch": self.through_scratch,
                "isa": self.built.isa, "build_key": self.built.key}
