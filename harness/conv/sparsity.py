"""Sparse weights: CSR forms for the kernels and sparse weight tensors for the sweeps.

Sparsity is the fraction of zero weights (0.9 = 90% sparse); density x = 1 - sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.conv.convspec import ConvSpec
from harness.errors import HarnessError, ShapeError


@dataclass(frozen=True)
class CSR:
    """One row per output channel; colidx are offsets in whatever layout the kernel reads.
    Within a row the non-zeros are ordered by input channel, then offset."""

    rowptr: np.ndarray   # int32, rows + 1
    colidx: np.ndarray   # int32, nnz
    values: np.ndarray   # float32, nnz
    rows_of_nnz: np.ndarray  # int64, the row of each non-zero
    channel_of_nnz: np.ndarray  # int64, the input channel each non-zero reads

    @property
    def nnz(self) -> int:
        return int(self.values.size)


@dataclass(frozen=True)
class DirectLayout:
    """How the padded input is stored for the direct kernel (see kernels_c/direct.c).

    Generic: one copy, split by stride phase; each phase plane_h x plane_w.
    Aligned (stride 1 only): one copy of the input per kernel column, shifted left by that
    column's offset, its rows as wide as an output row rounded up to whole vectors, so every
    load of the kernel starts on a vector boundary and none straddles two cache lines.
    The kernel pads one block of input channels at a time into a small buffer, so offsets count
    from the first channel of the non-zero's block."""

    plane_h: int
    plane_w: int
    copies: int          # 1, or kernel width for the aligned layout
    plane: int           # floats per channel in one copy
    block_channels: int  # input channels per padded block
    copy_floats: int     # floats per copy of one block

    @property
    def aligned(self) -> bool:
        return self.copies > 1


def band_height(spec: ConvSpec, band_rows: int) -> int:
    """Output rows one work item of the direct kernel covers: ``band_rows`` where that splits
    the output into bands, else all of them (as the kernel reads the plan)."""
    return band_rows if 0 < band_rows < spec.out_height else spec.out_height


def _unaliased_rows(rows: int, row_floats: int) -> int:
    """``rows``, or one more where planes of that many rows would start a multiple of four
    cache lines (and of four rows' power-of-two part) apart. Planes whose starts fall on a
    few L1 sets evict each other's windows long before L1 is full: 14x14 layers' 16 rows of
    16 floats, a kilobyte a plane, put a window of a few rows of every plane on the same
    quarter of the sets."""
    row_bytes = 4 * row_floats
    period = 4 * max(64, row_bytes & -row_bytes)
    return rows + 1 if (rows * row_bytes) % period == 0 else rows


def direct_layout(spec: ConvSpec, aligned: bool = False, vector: int = 16,
                  block_channels: int | None = None, band_rows: int = 0) -> DirectLayout:
    """The layout for a plan; ``block_channels`` defaults to all channels in one block.
    With ``band_rows`` (fewer than the output's rows), a plane holds the padded rows one band
    of that many output rows reads instead of the whole padded image."""
    block = min(block_channels or spec.in_channels, spec.in_channels)
    sh, sw = spec.stride
    rows, band = spec.padded_h, band_height(spec, band_rows)
    if band < spec.out_height:
        rows = (band - 1) * sh + (spec.kernel_h - 1) * spec.dilation[0] + 1
    if aligned and (sh, sw) == (1, 1) and spec.kernel_w > 1:
        # copy s row h holds padded columns s * dw onwards, and output x reads its column x:
        # a row needs only the output row's width (in whole vectors), not the padded one's
        plane_w = -(-spec.out_width // vector) * vector
        rows = _unaliased_rows(rows, plane_w)
        plane = rows * plane_w
        return DirectLayout(rows, plane_w, spec.kernel_w, plane, block, block * plane)
    plane_h, plane_w = -(-rows // sh), -(-spec.padded_w // sw)
    if (sh, sw) == (1, 1):  # phase planes of strided layers gained nothing from the row
        plane_h = _unaliased_rows(plane_h, plane_w)
    plane = sh * sw * plane_h * plane_w
    return DirectLayout(plane_h, plane_w, 1, plane, block, block * plane)


def direct_geometry(spec: ConvSpec, layout: DirectLayout) -> dict:
    """The fields of the direct kernel's spconv_geometry for ``spec`` in ``layout``."""
    return dict(batch=spec.batch, channels=spec.in_channels, height=spec.height,
                width=spec.width, out_channels=spec.out_channels, out_height=spec.out_height,
                out_width=spec.out_width, pad_h=spec.padding[0], pad_w=spec.padding[1],
                stride_h=spec.stride[0], stride_w=spec.stride[1], plane_h=layout.plane_h,
                plane_w=layout.plane_w, copies=layout.copies, copy_shift=spec.dilation[1],
                kernel_h=spec.kernel_h, kernel_w=spec.kernel_w, groups=spec.groups)


def _flat_nonzeros(w: np.ndarray):
    m_count = w.shape[0]
    flat = w.reshape(m_count, -1)
    rows, cols = np.nonzero(flat)
    return rows.astype(np.int64), cols.astype(np.int64), flat[rows, cols].astype(np.float32)


def _assemble(rows, offsets, values, m_count: int, channels=None) -> CSR:
    if offsets.size and offsets.max() >= np.iinfo(np.int32).max:
        raise ShapeError("layer too large: input offsets overflow 32-bit indices")
    channels = np.zeros_like(rows) if channels is None else channels
    order = np.lexsort((offsets, channels, rows))
    rows, offsets, values, channels = rows[order], offsets[order], values[order], channels[order]
    rowptr = np.zeros(m_count + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=m_count), out=rowptr[1:])
    return CSR(rowptr, offsets.astype(np.int32), np.ascontiguousarray(values), rows, channels)


def direct_csr(w: np.ndarray, spec: ConvSpec, layout: DirectLayout | None = None) -> CSR:
    """CSR whose column index is the non-zero's offset in its padded input-channel block."""
    layout = layout or direct_layout(spec)
    rows, cols, values = _flat_nonzeros(w)
    m_per_group = spec.out_channels // spec.groups
    c_per_group = spec.in_channels // spec.groups
    area = spec.kernel_h * spec.kernel_w
    sh, sw = spec.stride
    dh, dw = spec.dilation
    channel = rows // m_per_group * c_per_group + cols // area
    in_block = channel % layout.block_channels
    r = cols // spec.kernel_w % spec.kernel_h
    s = cols % spec.kernel_w
    if layout.aligned:  # copy s holds the input shifted by s * dw: the column offset vanishes
        offsets = s * layout.copy_floats + in_block * layout.plane + r * dh * layout.plane_w
    else:
        rh, cw = r * dh, s * dw
        offsets = (in_block * layout.plane
                   + ((rh % sh) * sw + cw % sw) * layout.plane_h * layout.plane_w
                   + (rh // sh) * layout.plane_w + cw // sw)
    return _assemble(rows, offsets, values, spec.out_channels, channel)


@dataclass(frozen=True)
class BlockedCSR:
    """The non-zeros ordered by input-channel block, then output-channel group (then as in
    the CSR): the direct kernel walks blocks outermost, so it streams them in storage order.
    A group of ``group`` output channels holds the union of their supports in the block, each
    position with one value per channel (zero where that channel has no weight)."""

    blkptr: np.ndarray   # int32 (blocks, groups + 1): block b's positions of group q are
                         # [blkptr[b, q], blkptr[b, q + 1])
    colidx: np.ndarray   # int32, one per position
    values: np.ndarray   # float32, group per position (position-major)
    group: int = 1

    @property
    def positions(self) -> int:
        return int(self.colidx.size)


def pointwise_csr(w: np.ndarray, channel_block: int, chunk: int) -> CSR:
    """CSR of a 1x1 layer whose column index is the non-zero's offset in the pointwise
    kernel's packed slice: its input channel within its block of ``channel_block``, times the
    ``chunk`` floats of one packed row."""
    rows, channels, values = _flat_nonzeros(w)
    return _assemble(rows, channels % channel_block * chunk, values, w.shape[0], channels)


def block_major(csr: CSR, spec: ConvSpec, channel_block: int, group: int = 1) -> BlockedCSR:
    """Regroup a CSR's non-zeros by blocks of ``channel_block`` input channels and groups of
    ``group`` consecutive output channels."""
    blocks = -(-spec.in_channels // channel_block)
    groups = -(-spec.out_channels // group)
    block_of_nnz = csr.channel_of_nnz // channel_block
    group_of_nnz = csr.rows_of_nnz // group
    order = np.lexsort((csr.colidx, csr.channel_of_nnz, group_of_nnz, block_of_nnz))
    keys = (block_of_nnz * groups + group_of_nnz)[order]
    offsets = csr.colidx[order]
    # a position is one (block, group, offset); the CSR holds each (row, offset) once
    first = np.ones(keys.size, dtype=bool)
    first[1:] = (keys[1:] != keys[:-1]) | (offsets[1:] != offsets[:-1])
    position = np.cumsum(first) - 1
    values = np.zeros((int(first.sum()), group), np.float32)
    values[position, csr.rows_of_nnz[order] % group] = csr.values[order]
    queries = np.arange(blocks, dtype=np.int64)[:, None] * groups + np.arange(groups + 1)
    blkptr = np.searchsorted(keys[first], queries.ravel()).reshape(blocks, groups + 1)
    return BlockedCSR(blkptr.astype(np.int32), np.ascontiguousarray(offsets[first]),
                      values.ravel(), group)


def support_group(w: np.ndarray, groups=(4, 2), conv_groups: int = 1) -> int:
    """The largest of ``groups`` such that every run of that many consecutive output channels
    of one conv group shares one support (the block patterns), else 1. Channels of different
    conv groups read different inputs, so no load is shared across them: a depthwise layer's
    dense weights run as group 1 (as a group of 4, every position took four channels' FMAs
    for one channel's work: 1.6-3.6x slower on MobileNetV2's depthwise layers)."""
    mask = w.reshape(w.shape[0], -1) != 0
    per_conv_group = mask.shape[0] // max(1, conv_groups)
    for g in groups:
        if per_conv_group % g == 0:
            blocks = mask.reshape(-1, g, mask.shape[1])
            if np.array_equal(blocks.any(axis=1), blocks.all(axis=1)):
                return g
    return 1


def lowered_csr(w: np.ndarray, spec: ConvSpec, row_stride: int) -> CSR:
    """CSR over the im2col matrix of all groups, its rows row_stride floats apart: column
    index = row offset (g*K + k) * row_stride."""
    rows, cols, values = _flat_nonzeros(w)
    group = rows // (spec.out_channels // spec.groups)
    offsets = (group * spec.reduction_length + cols) * row_stride
    return _assemble(rows, offsets, values, spec.out_channels)


def check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) \
            or not 0.0 <= float(sparsity) < 1.0:
        raise HarnessError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)


def random_sparse_weights(shape, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian weights with exactly round(sparsity * size) zeros at uniformly random places."""
    sparsity = check_sparsity(sparsity)
    size = int(np.prod(shape))
    w = rng.standard_normal(size).astype(np.float32)
    w[w == 0] = 1e-3  # keep the non-zero count exact
    zeros = int(round(sparsity * size))
    w[rng.choice(size, zeros, replace=False)] = 0.0
    return w.reshape(shape)


def magnitude_pruned_weights(shape, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian weights with the smallest-magnitude fraction ``sparsity`` of each layer zeroed."""
    return magnitude_prune(rng.standard_normal(tuple(shape)).astype(np.float32), sparsity)


def magnitude_prune(w: np.ndarray, sparsity: float) -> np.ndarray:
    """A copy of ``w`` with its smallest-magnitude fraction ``sparsity`` zeroed."""
    sparsity = check_sparsity(sparsity)
    flat = np.array(w, dtype=np.float32).reshape(-1)
    zeros = int(round(sparsity * flat.size))
    if zeros:
        flat[np.argpartition(np.abs(flat), zeros - 1)[:zeros]] = 0.0
    return flat.reshape(w.shape)


def block_pruned_weights(shape, sparsity: float, rng: np.random.Generator,
                         group: int) -> np.ndarray:
    """Gaussian weights pruned in blocks of ``group`` consecutive output channels at the same
    input position (one shared support per block): the blocks of smallest L2 norm, a fraction
    ``sparsity`` of them, are zeroed. A last block of fewer channels is one block too."""
    sparsity = check_sparsity(sparsity)
    m_count = shape[0]
    w = rng.standard_normal(int(np.prod(shape))).astype(np.float32).reshape(m_count, -1)
    blocks = -(-m_count // group)
    padded = np.zeros((blocks * group, w.shape[1]), np.float32)
    padded[:m_count] = w
    norms = np.sqrt((padded.reshape(blocks, group, -1) ** 2).sum(axis=1)).ravel()
    zeros = int(round(sparsity * norms.size))
    keep = np.ones(norms.size, dtype=bool)
    if zeros:
        keep[np.argpartition(norms, zeros - 1)[:zeros]] = False
    mask = np.repeat(keep.reshape(blocks, 1, -1), group, axis=1).reshape(blocks * group, -1)
    return (w * mask[:m_count]).reshape(shape)


def sparsity_of(w: np.ndarray) -> float:
    return 1.0 - np.count_nonzero(w) / w.size
