"""Pointwise sparse convolution (kernels_c/pointwise.c): the direct method for 1x1 kernels
without padding, where the input needs no padded copy: each chunk of output pixels is packed
(block by block of input channels, where there are many; at a stride, gathered from every
stride-th input pixel) and each output channel's non-zeros stream over the packed slice, or,
at stride 1 where the slice would be read little, over the input where it lies (in place)."""

from __future__ import annotations

import numpy as np

from harness.conv.sparsity import block_major, pointwise_csr
from harness.errors import ShapeError
from harness.kernels import native
from harness.kernels.native import c_kernels_fuse
from harness.kernels.base import PreparedConv
from harness.machine.hostinfo import detect_host

# What a prepared kernel's work items are (its describe() holds them): recorded with every
# sweep row of this method, so that a stored run is priced as it ran, whatever the defaults
# become.
CONFIG_FIELDS = {"chunk": int, "channel_block": int, "out_block": int, "in_place": bool}
L1_SLICE_BYTES = 24 * 1024  # a chunk's slice of the input (one channel block), kept within L1
MIN_CHUNK_VECTORS = 4       # narrower register tiles cost more loads per FMA than L2 does
ACC_BYTES = 256 * 1024      # one work item's scratch rows kept within a quarter of an L2
WHOLE_SLICE_L1 = 1.5        # a slice of all input channels up to this many L1s is packed whole
MIN_BLOCK_NNZ = 25          # non-zeros of an output channel a channel block must pay its trip with
# Storing the accumulators straight from registers gained up to 21% on planes of 14x14 and
# more with few non-zeros a row, but lost 5-8% on 7x7 ones when they ran in chunks of three
# vectors and one lane (an AMD EPYC, Zen 5, AVX-512, bench/pointwise_store.py); as one chunk
# of four vectors they gained 0-5% (an Intel Xeon, AVX-512). Chunks of fewer vectors than
# this go through the scratch row.
SCRATCH_BELOW_VECTORS = 4
# Reading the input in place instead of packing it (an AMD EPYC, Zen 4, AVX-512, one thread):
# 1.09-1.44x faster where an item's output channels read each input channel 0.8-3.2 times on
# average (a 95%-sparse bottleneck network's 1x1 layers), 1.02-1.10x at 6.4 reads from
# 64-byte aligned inputs but 0.81-0.99x from unaligned ones, 0.83-0.97x at 13-51 reads
# (ResNet-50's 1x1 layers at 90%).
IN_PLACE_READS = 4.0


def is_pointwise(spec) -> bool:
    """A 1x1 kernel without padding in one group, at any stride (dilation moves no tap of a
    1x1 kernel)."""
    return ((spec.kernel_h, spec.kernel_w) == (1, 1) and spec.padding == (0, 0)
            and spec.groups == 1)


def default_chunk(spec, vector: int, max_tile: int) -> int:
    """Pixels per work item: the widest run of whole vectors (at most one register tile)
    whose slice of every input channel fits L1_SLICE_BYTES, but at least MIN_CHUNK_VECTORS;
    a plane narrower than that is one chunk, its last vector partly filled (a 7x7 plane in
    chunks of 3 vectors left a second chunk of one pixel: every non-zero paid a second tile
    call for it, 1.2-1.5x the time of one chunk of 4 on ResNet-50's 7x7 layers on an Intel
    Xeon, AVX-512)."""
    pixels = spec.out_pixels
    fits = L1_SLICE_BYTES // (4 * spec.in_channels * vector)
    vectors = max(MIN_CHUNK_VECTORS, min(max_tile, fits), 1)
    return vector * min(vectors, -(-pixels // vector))


def default_channel_block(spec, chunk: int, l1d_bytes: int, density: float) -> int:
    """Input channels packed at a time, where the slice of all of them is more than
    WHOLE_SLICE_L1 times ``l1d_bytes``: as many as fit L1_SLICE_BYTES, or, where such a block
    would hold fewer than MIN_BLOCK_NNZ non-zeros of an output channel on average, as many as
    hold that many (the channels then split into equal blocks); all of them where the slice
    is smaller, or where fewer than three such blocks fit. The sums of each output row wait
    in a scratch row between blocks: a few loads and stores a block, where a slice far past
    L1 makes every load of every non-zero come from L2. (On ResNet-50's 1x1 layers, blocks
    of 96 channels gained 1.17-1.47x with 512-2048 input channels at 70% but lost up to 20%
    at 90%, and up to 10% with 128-256 channels at 70%: bench/pointwise_store.py on an AMD
    EPYC, Zen 5. On a Zen 4, blocks of 256 channels in place of all 1024-2048 gained
    1.1-1.3x at 90%; at 95% two blocks of 512 lost up to 11% against all 1024, four of 512
    gained up to 10% against all 2048. A slice of 64 KiB, twice that Zen 4's L1, ran 1.2-1.4x
    faster in blocks of 96 channels at 40-50% and as fast at 70%; the same slice was best
    whole with a 48 KiB L1.)"""
    channels = spec.in_channels
    if 4 * channels * chunk <= WHOLE_SLICE_L1 * l1d_bytes:
        return channels
    block = max(1, min(channels, L1_SLICE_BYTES // (4 * chunk)))
    if block * density < MIN_BLOCK_NNZ:
        block = int(np.ceil(MIN_BLOCK_NNZ / density)) if density > 0 else channels
        if 3 * block > channels:
            return channels
        block = -(-channels // (channels // block))  # equal blocks, no sliver at the end
    return block


def default_out_block(spec, threads: int, chunk: int, channel_block: int) -> int:
    """Output channels per work item: all of them, unless there are fewer pixel chunks than
    threads (then split into as few blocks as give every thread an item: every block packs
    the chunk's input again), or (with channel blocks) their scratch rows would not stay
    within ACC_BYTES. (Four items a thread, the earlier rule, cost up to 14% on one thread
    and 27% on two on ResNet-50's 14x14 and 7x7 layers at 90%, where the chunks are few;
    2% and 6% over its twelve 1x1 layers: bench/pointwise_store.py on an AMD EPYC, Zen 4.)"""
    items = max(1, spec.batch * -(-spec.out_pixels // chunk))
    block = spec.out_channels
    if items < threads:
        block = max(1, -(-spec.out_channels // -(-threads // items)))
    if channel_block < spec.in_channels:
        block = min(block, max(1, ACC_BYTES // (4 * chunk)))
    return block


def in_place_default(spec, density: float, out_block: int) -> bool:
    """Whether the kernel reads the input in place by default: at stride 1, where an item's
    output channels read each input channel's chunk at most IN_PLACE_READS times on average
    (a packed copy pays for itself only where it is read often)."""
    return spec.stride == (1, 1) and density * out_block <= IN_PLACE_READS


class PointwiseSparseConv(PreparedConv):
    method = "pointwise_sparse"
    native = True

    @classmethod
    def applies(cls, spec) -> bool:
        return is_pointwise(spec)

    fuses_relu_max = staticmethod(c_kernels_fuse)

    def __init__(self, w, bias, spec, *, relu, threads, kernels=None, chunk=None,
                 out_block=None, channel_block=None, through_scratch: bool | None = None,
                 row_major: bool = False, in_place: bool | None = None, relu_max=None, **_):
        """``chunk``, ``out_block`` and ``channel_block`` default to default_chunk,
        default_out_block and default_channel_block. ``through_scratch`` runs the earlier form
        of the kernel, whose accumulators go through a scratch row to the output; None
        (default) takes it for chunks shorter than SCRATCH_BELOW_VECTORS vectors only (see
        that constant). ``row_major`` stores the non-zeros row by row, the earlier storage
        (see _storage). ``in_place`` (stride 1 only) reads chunks of whole vectors from the
        input where it lies instead of packing them; None (default): see in_place_default."""
        super().__init__(spec, relu=relu, threads=threads, relu_max=relu_max)
        if not is_pointwise(spec):
            raise ShapeError("pointwise_sparse runs 1x1 convolutions without padding in one "
                             f"group, not {spec.kernel_h}x{spec.kernel_w} padding "
                             f"{spec.padding} groups {spec.groups}")
        built = self.built = native.resolve(kernels)
        ffi, lib = built.ffi, built.lib
        vector, max_tile = lib.spconv_vector_floats(), lib.spconv_max_tile_vectors()
        pixels = spec.out_pixels
        self.chunk = chunk or default_chunk(spec, vector, max_tile)
        self.nnz = int(np.count_nonzero(w))
        l1d = detect_host().caches_kib.get("l1d", 32) * 1024
        self.channel_block = min(
            channel_block or default_channel_block(spec, self.chunk, l1d, self.nnz / w.size),
            spec.in_channels)
        self.out_block = out_block or default_out_block(spec, threads, self.chunk,
                                                        self.channel_block)
        tile = max(1, min(max_tile, self.chunk // vector))
        if through_scratch is None:
            through_scratch = self.chunk < SCRATCH_BELOW_VECTORS * vector
        self.row_major = bool(row_major)
        self._blkptr, self._colidx, self._values = self._storage(w, spec)
        if in_place is None:
            in_place = in_place_default(spec, self.nnz / w.size, self.out_block)
        if in_place and spec.stride != (1, 1):
            raise ShapeError("pointwise_sparse reads the input in place at stride 1 only, "
                             f"not stride {spec.stride}")
        self.in_place = bool(in_place)
        # the non-zeros' offsets into the input itself: the same channels, a plane apart
        self._in_colidx = (self._colidx // self.chunk * (spec.height * spec.width)
                           ).astype(np.int32) if self.in_place else None
        self._bias = None if bias is None else bias.copy()
        self._args = ffi.new("spconv_pointwise_args *", dict(
            batch=spec.batch, channels=spec.in_channels, out_channels=spec.out_channels,
            pixels=pixels, in_pixels=spec.height * spec.width, in_width=spec.width,
            out_width=spec.out_width, stride_h=spec.stride[0], stride_w=spec.stride[1],
            chunk=self.chunk, out_block=self.out_block,
            channel_block=self.channel_block, tile_vectors=tile,
            threads=threads, row_major=int(self.row_major),
            through_scratch=int(through_scratch), in_place=int(self.in_place)))
        self._scratch = native.aligned_zeros(lib.spconv_pointwise_scratch_floats(self._args), 64)
        self.through_scratch = bool(through_scratch)
        self._ptrs = (native.int_ptr(built, self._blkptr), native.int_ptr(built, self._colidx),
                      ffi.NULL if self._in_colidx is None else
                      native.int_ptr(built, self._in_colidx),
                      native.float_ptr(built, self._values),
                      ffi.NULL if self._bias is None else native.float_ptr(built, self._bias))
        self._scratch_ptr = native.float_ptr(built, self._scratch)
        self._act = native.activation(built, self)

    def _storage(self, w, spec) -> tuple:
        """(blkptr, colidx, values): the non-zeros block-major, in the order the kernel
        streams them, or row by row (row_major; each row's segment of a block a jump from the
        next row's, up to 1.5x slower on layers of many channel blocks at 30-70% sparsity:
        bench/pointwise_store.py)."""
        csr = pointwise_csr(w, self.channel_block, self.chunk)
        if not self.row_major:
            blocked = block_major(csr, spec, self.channel_block)
            return blocked.blkptr, blocked.colidx, blocked.values
        # row m's non-zeros in channel block b start at blkptr[m, b]
        cblocks = -(-spec.in_channels // self.channel_block)
        starts = np.minimum(np.arange(cblocks + 1) * self.channel_block, spec.in_channels)
        keys = csr.rows_of_nnz * spec.in_channels + csr.channel_of_nnz
        queries = np.arange(spec.out_channels)[:, None] * spec.in_channels + starts[None, :]
        return np.searchsorted(keys, queries).astype(np.int32), csr.colidx, csr.values

    def _run(self, x, out):
        self._call(x, None, out)

    def run_with_residual(self, x, residual, out) -> None:
        """out = act(conv(x) + residual): a shortcut addition (and the ReLU after it) fused
        into the kernel's output step. Arrays as for run_into; residual has out's shape."""
        self._call(x, residual, out)
        self._cap(out)

    def address_runner(self, out):
        if not self._whole_by_address():
            return None
        cast, call = self.built.ffi.cast, self._call_pointers
        out_ptr = native.float_ptr(self.built, out)

        def run(x_address: int, residual_address: int = 0) -> None:
            call(cast("float *", x_address), cast("float *", residual_address), out_ptr)
        return run

    def _call(self, x, residual, out) -> None:
        built = self.built
        self._call_pointers(
            native.float_ptr(built, x),
            built.ffi.NULL if residual is None else native.float_ptr(built, residual),
            native.float_ptr(built, out))

    def _call_pointers(self, x_ptr, residual_ptr, out_ptr) -> None:
        """The kernel on C pointers (residual_ptr NULL: none)."""
        rc = self.built.lib.spconv_pointwise(self._args, *self._ptrs, self._act, x_ptr,
                                             residual_ptr, self._scratch_ptr, out_ptr)
        native.check_rc(self.built, rc, "spconv_pointwise")

    def describe(self) -> dict:
        return {**{name: getattr(self, name) for name in CONFIG_FIELDS}, "nnz": self.nnz,
                "through_scratch": self.through_scratch, "row_major": self.row_major,
                "isa": self.built.isa, "build_key": self.built.key}
