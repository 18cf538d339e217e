"""The mechanistic model of the pointwise kernel (kernels_c/pointwise.c, the 1x1 layers without
padding): a layer's time from what its chunks and channel blocks make the kernel do, priced by
the same calibration as the direct kernel's model (harness.models.mechanistic), with no timing
of the layer.

Per work item (one chunk of pixels of one image, one block of output channels) and channel
block of input channels:
- packing: the block's rows of the chunk copied into a slice, read from where the input lies
  (at a stride, gathered from an input that many times larger); none for a chunk of whole
  vectors read in place;
- tiles: every output channel with non-zeros in the block runs one register tile over the
  chunk, at the calibrated cost of a call of that many positions, plus, where the slice (with
  a row's non-zeros and output, which pass through L1 between two reads of its lines) is
  past L1, the calibrated extra cost per position of streaming it from the level that holds
  it, for the share of reads that miss L1 (l1_miss_share);
- non-zeros: the item's rows' values and indices, streamed again for every chunk, from where
  all of the layer's lie, at what the triad rate of that working set costs over L1's
  (ResNet-50's 1x1 layers of 512-2048 channels hold 0.4-12 MB of them at 30% sparsity);
- branches: the ends of the rows' loops that the predictor misses (every count of non-zeros
  but the most frequent), at the calibrated cost of a miss;
- sums between blocks: with several channel blocks, each output row's sums go to a scratch
  row and back once per block;
- output: each row's chunk stored once, at the triad rate of the output's working set;
- residual (a shortcut addition fused into the output step): each row's chunk of it read
  once, at the triad rate of the working set of input, residual and output together (in a
  network the residual was written layers before, and comes from where that leaves it);
then the items are split into equal contiguous shares, one per thread (the kernel's static
schedule), and one call's overhead is added. Chunks under four vectors, which go through
scratch rows (harness.kernels.pointwise), are priced as the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.conv.convspec import ConvSpec
from harness.kernels.pointwise import (default_channel_block, default_chunk, default_out_block,
                                       in_place_default)
from harness.machine.hostinfo import detect_host
from harness.models.mechanistic import (KernelCosts, even_split, nonzero_bytes,
                                        unpredictable_count)
from harness.models.rows import row_density, row_spec
from harness.sweep.record import pointwise_config_of


def l1_miss_share(swept: float, l1_bytes: float) -> float:
    """The share of a row's reads of the slice that miss L1 when ``swept`` bytes pass through
    it between two reads of a line. Each output row reads the channel rows of its own
    non-zeros, a random subset of the slice, so a line comes back after a random number of
    other reads, and under LRU it is still held with about the chance that L1 holds any line
    of what passes: l1/swept (a sequential sweep past L1, the direct kernel's, finds none)."""
    return max(0.0, 1.0 - l1_bytes / swept)


def pointwise_time(costs: KernelCosts, spec: ConvSpec, density: float, chunk: int,
                   channel_block: int, out_block: int, threads: int,
                   residual: bool = False, in_place: bool = False) -> dict:
    """Predicted seconds of one call of the pointwise kernel with ``chunk`` pixels per item,
    ``channel_block`` input channels packed at a time and ``out_block`` output channels per
    item (adding a ``residual`` of the output's shape; reading chunks of whole vectors
    ``in_place``), and its parts (summed over the items, per thread)."""
    lanes = costs.lanes
    pixels = spec.out_pixels
    vectors = -(-pixels // lanes)
    c, m, p = spec.in_channels, spec.out_channels, density
    blocks = [min(channel_block, c - c0) for c0 in range(0, c, channel_block)]
    in_bytes = 4.0 * spec.batch * c * spec.height * spec.width
    out_bytes = 4.0 * spec.batch * m * pixels
    weight_bytes = nonzero_bytes(1) * p * c * m

    def item(width: int, rows: int, packed: bool) -> dict:
        """One work item: a chunk of ``width`` vectors for ``rows`` output channels."""
        floats = width * lanes
        l1_price = float(costs.tile(1, width, "l1", "aligned")["position_s"])
        packing = tiles = branches = sums = 0.0
        for n in blocks:
            slice_bytes = 4.0 * n * floats
            packing += costs.stream_s(slice_bytes, in_bytes) if packed else 0.0
            positions = p * n
            nonempty = 1.0 - (1.0 - p) ** n
            per_row = positions / nonempty if nonempty else 0.0
            # between two reads of a line, at most the slice, one row's non-zeros (value and
            # index) and its output pass through L1
            swept = slice_bytes + nonzero_bytes(1) * positions + 2 * 4.0 * floats
            extra = l1_miss_share(swept, costs.l1_bytes) * (
                costs.position_s(1, width, max(swept, 2 * costs.l1_bytes), 0.0) - l1_price)
            tiles += rows * (nonempty * costs.short_call_s(1, width, per_row) + positions * extra)
            misses = min(nonempty, 1.0 - nonempty) + nonempty * unpredictable_count(n, p)
            branches += rows * misses * costs.branch_miss_s
        # the item's rows' non-zeros (value and index), streamed again for every chunk: from
        # the level that holds all of the layer's
        streaming = costs.beyond_l1_s(nonzero_bytes(1) * rows * p * c, weight_bytes)
        chunk_bytes = 4.0 * rows * floats  # the item's rows of output (and of residual)
        if len(blocks) > 1:  # each row's sums out to its scratch row and back, per block
            sums = (len(blocks) - 1) * costs.stream_s(2 * chunk_bytes, chunk_bytes)
        return {"packing_s": packing, "tiles_s": tiles, "weights_s": streaming,
                "branches_s": branches, "sums_s": sums,
                "stores_s": costs.stream_s(chunk_bytes, out_bytes),
                "residual_s": (costs.stream_s(chunk_bytes, in_bytes + 2 * out_bytes)
                               if residual else 0.0)}

    # the items in the kernel's order (image, chunk, block of output channels), split into
    # contiguous equal shares by its static schedule
    kinds, order = {}, []
    widths = even_split(vectors, max(1, chunk // lanes))  # the kernel's chunk_start
    for k, width in enumerate(widths):
        # in place, only a last chunk that is not whole vectors is packed
        packed = not in_place or (k == len(widths) - 1 and pixels % lanes != 0)
        for m0 in range(0, m, out_block):
            key = (width, min(out_block, m - m0), packed)
            if key not in kinds:
                kinds[key] = item(*key)
            order.append(key)
    order *= spec.batch
    shares = np.array_split(np.arange(len(order)), threads)
    finish = max((sum(sum(kinds[order[i]].values()) for i in share) for share in shares),
                 default=0.0)
    parts = {k: sum(kinds[key][k] for key in order) / threads
             for k in next(iter(kinds.values()))}
    call = costs.call_overhead(threads)
    return {"total_s": call + finish, **parts, "call_s": call}


def default_pointwise_time(costs: KernelCosts, spec: ConvSpec, density: float, threads: int,
                           l1d_bytes: int) -> float:
    """Predicted seconds of the pointwise kernel with the chunks and blocks it chooses by
    default (harness.kernels.pointwise) on a host of ``l1d_bytes`` of L1 data cache."""
    chunk = default_chunk(spec, costs.lanes, costs.max_tile)
    block = default_channel_block(spec, chunk, l1d_bytes, density)
    out_block = default_out_block(spec, threads, chunk, block)
    return pointwise_time(costs, spec, density, chunk, block, out_block, threads,
                          in_place=in_place_default(spec, density, out_block))["total_s"]


def pointwise_zero_shot(costs: KernelCosts, rows: pd.DataFrame) -> np.ndarray:
    """Predicted seconds of a sweep's pointwise-kernel rows on this host, each with the work
    items it recorded (harness.sweep.record), or the kernel's defaults where it has none."""
    l1d = detect_host().caches_kib.get("l1d", 32) * 1024
    out = []
    for _, r in rows.iterrows():
        spec, threads = row_spec(r), int(r["threads"])
        density, config = row_density(r, spec), pointwise_config_of(r)
        out.append(default_pointwise_time(costs, spec, density, threads, l1d) if config is None
                   else pointwise_time(costs, spec, density, threads=threads,
                                       **config)["total_s"])
    return np.array(out)
