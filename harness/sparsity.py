"""Sparse weights: CSR forms for the kernels and sparse weight tensors for the sweeps.

Sparsity is the fraction of zero weights (0.9 = 90% sparse); density x = 1 - sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .convspec import ConvSpec
from .errors import HarnessError, ShapeError


@dataclass(frozen=True)
class CSR:
    """One row per output channel; colidx are offsets in whatever layout the kernel reads."""

    rowptr: np.ndarray   # int32, rows + 1
    colidx: np.ndarray   # int32, nnz
    values: np.ndarray   # float32, nnz
    rows_of_nnz: np.ndarray  # int64, the row of each non-zero (for blocking)

    @property
    def nnz(self) -> int:
        return int(self.values.size)


def _flat_nonzeros(w: np.ndarray):
    m_count = w.shape[0]
    flat = w.reshape(m_count, -1)
    rows, cols = np.nonzero(flat)
    return rows.astype(np.int64), cols.astype(np.int64), flat[rows, cols].astype(np.float32)


def _assemble(rows: np.ndarray, offsets: np.ndarray, values: np.ndarray, m_count: int) -> CSR:
    if offsets.size and offsets.max() >= np.iinfo(np.int32).max:
        raise ShapeError("layer too large: input offsets overflow 32-bit indices")
    order = np.lexsort((offsets, rows))
    rows, offsets, values = rows[order], offsets[order], values[order]
    rowptr = np.zeros(m_count + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=m_count), out=rowptr[1:])
    return CSR(rowptr, offsets.astype(np.int32), np.ascontiguousarray(values), rows)


def phase_plane(spec: ConvSpec) -> tuple[int, int]:
    """Rows and columns of one stride phase of the padded input (see kernels_c/direct.c)."""
    sh, sw = spec.stride
    return -(-spec.padded_h // sh), -(-spec.padded_w // sw)


def direct_csr(w: np.ndarray, spec: ConvSpec) -> CSR:
    """CSR whose column index is the non-zero's offset in the stride-phase-split padded input."""
    rows, cols, values = _flat_nonzeros(w)
    m_per_group = spec.out_channels // spec.groups
    c_per_group = spec.in_channels // spec.groups
    area = spec.kernel_h * spec.kernel_w
    sh, sw = spec.stride
    dh, dw = spec.dilation
    plane_h, plane_w = phase_plane(spec)
    plane = sh * sw * plane_h * plane_w
    channel = rows // m_per_group * c_per_group + cols // area
    rh = (cols // spec.kernel_w % spec.kernel_h) * dh
    cw = (cols % spec.kernel_w) * dw
    offsets = (channel * plane + ((rh % sh) * sw + cw % sw) * plane_h * plane_w
               + (rh // sh) * plane_w + cw // sw)
    return _assemble(rows, offsets, values, spec.out_channels)


def channel_block_pointers(csr: CSR, spec: ConvSpec, channel_block: int) -> np.ndarray:
    """(M, blocks + 1) int32: where each row's non-zeros of each input-channel block start."""
    plane_h, plane_w = phase_plane(spec)
    plane = spec.stride[0] * spec.stride[1] * plane_h * plane_w
    blocks = -(-spec.in_channels // channel_block)
    limit = spec.in_channels * plane
    keys = csr.rows_of_nnz * limit + csr.colidx  # sorted: rows, then offsets
    bounds = np.minimum(np.arange(blocks + 1, dtype=np.int64) * channel_block * plane, limit)
    queries = np.arange(spec.out_channels, dtype=np.int64)[:, None] * limit + bounds[None, :]
    return np.searchsorted(keys, queries.ravel()).reshape(spec.out_channels, blocks + 1).astype(np.int32)


def lowered_csr(w: np.ndarray, spec: ConvSpec, npix: int) -> CSR:
    """CSR over the im2col matrix of all groups: column index = row offset (g*K + k) * npix."""
    rows, cols, values = _flat_nonzeros(w)
    group = rows // (spec.out_channels // spec.groups)
    offsets = (group * spec.reduction_length + cols) * npix
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
    sparsity = check_sparsity(sparsity)
    w = rng.standard_normal(int(np.prod(shape))).astype(np.float32)
    zeros = int(round(sparsity * w.size))
    if zeros:
        w[np.argpartition(np.abs(w), zeros - 1)[:zeros]] = 0.0
    return w.reshape(shape)


def sparsity_of(w: np.ndarray) -> float:
    return 1.0 - np.count_nonzero(w) / w.size
