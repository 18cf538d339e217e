"""A mechanistic model of the direct kernel (kernels_c/direct.c): a layer's time from what the
plan makes the kernel do, priced by the host's calibration alone (harness.machine.roofs), with
no timing of the layer.

Per work item (one band of output rows of one image for one block of output channels):
- tiles: for every output-channel group and input-channel block with non-zeros, the run is
  split into register tiles (tile.h's even split); each tile call costs its fixed cost plus
  the traffic of its accumulators at the working set of the item's accumulator run, and each
  non-zero position the calibrated cost of that tile width with its input in L1, with the
  share of loads that straddle cache lines the layout's offsets give (priced apart: split
  loads);
- reloads: where what each output channel streams again (the padded block, or with tiles
  outside channels one tile's window of it) is past L1, the lines each tile call touches,
  at the calibrated tiles' extra cost per byte of streaming from the level that holds it
  (sized by what passes through the cache between two reads of a line: all of it when each
  channel sweeps the block, less when each touches only part of it);
- branches: the tests of whether a group has non-zeros in a block, and the ends of the loops
  over them, that the branch predictor misses (the rarer outcome of the test; every count but
  the most frequent), at the calibrated cost of a miss;
- padding: the rows of every channel of every block it reads, copied into the padded layout
  (once per image with shared padding), at the calibrated cost per row of the copy path and
  row width (or the triad rate of the working sets it moves between, if that is slower);
  with several input-channel blocks, accumulators set to the bias (the sums wait there
  between blocks) at the triad rate of their working set; the outputs, which the last block's
  tiles write from the registers, at the triad rate of the layer's output;
- non-zeros: the item's values and column indices, streamed once per item from where all of
  the layer's lie, at what the triad rate of that working set costs over L1's (a layer's
  non-zeros at 30-70% sparsity are megabytes: 13 MB for a 3x3 layer of 512 channels at 30%);
then the items, at their real sizes, are dealt to the threads in turn as the kernel deals
them, and one call's overhead is added. Expected counts (positions per block,
blocks with any) come from the density and the pattern: uniform random supports, or
supports shared by blocks of output channels.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import binom

from harness.conv.convspec import ConvSpec
from harness.conv.sparsity import band_height, direct_csr, direct_layout
from harness.conv.weights import block_group
from harness.kernels.direct import plan_with_tile
from harness.kernels.direct_plan import DirectPlan
from harness.machine.isa import isa_table
from harness.machine.roofs import LINE_FLOATS, POSITIONS, split_fraction

FEW_UP_TO = POSITIONS[0]  # tile calls of fewer positions than this are priced whole
from harness.models.curves import measured_upper
from harness.models.rows import row_density, row_spec
from harness.sweep.record import plan_of
from harness.sweep.results import crossover_sparsity


@dataclass
class KernelCosts:
    """The calibration's rates for one build (a calibration dict with its ``roofs``)."""

    tiles: dict          # "g/t/level/offsets" -> {"position_s", "call_s"}
    random_split: dict   # "level/random" -> share of split loads of the calibration offsets
    level_bytes: dict    # level -> bytes of the calibration buffer
    call_s: dict         # threads -> seconds per call
    triad: dict          # level -> (working set bytes, best GB/s), one thread
    lanes: int
    max_tile: int
    isa: str
    padding: dict        # copy path -> {"widths": [...], "row_s": [...]} (roofs.PAD_PATHS)
    branch_miss_s: float  # one mispredicted branch
    load_piece: int = 0   # floats the core loads a vector in, as far as line splits go (0: all)
    # the plans harness.models.plan_choice chose priced by these costs, memoised with them
    chosen_plans: dict = field(default_factory=dict, repr=False, compare=False)
    interpolated_tiles: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_calibration(cls, cal: dict) -> "KernelCosts":
        roofs = cal["roofs"]
        return cls(steady_fixed_costs(roofs["tiles"]), roofs["random_split"],
                   roofs["level_bytes"],
                   {int(k): v for k, v in roofs["call_s"].items()},
                   {k: (v["working_set_kib"] * 1024, v.get("best", v["median"]))
                    for k, v in cal["triad_gbps_1"].items()},
                   isa_table()[cal["isa"]].lanes, isa_table()[cal["isa"]].max_tile, cal["isa"],
                   roofs["padding"], roofs["branch_miss_s"], roofs.get("load_piece_floats", 0))

    def tile(self, group: int, width: int, level: str, offsets: str) -> dict:
        """A tile's calibrated costs; widths between the calibrated ones interpolated."""
        key = f"{group}/{width}/{level}/{offsets}"
        if key in self.tiles:
            return self.tiles[key]
        if key not in self.interpolated_tiles:  # the plan searches price a width many times
            self.interpolated_tiles[key] = self._interpolated_tile(group, width, level, offsets)
        return self.interpolated_tiles[key]

    def _interpolated_tile(self, group: int, width: int, level: str, offsets: str) -> dict:
        widths = sorted(int(k.split("/")[1]) for k in self.tiles
                        if k.startswith(f"{group}/") and k.endswith(f"/{level}/{offsets}"))
        lo = max(w for w in widths if w < width)
        hi = min(w for w in widths if w > width)
        a, b = (self.tiles[f"{group}/{w}/{level}/{offsets}"] for w in (lo, hi))
        f = (width - lo) / (hi - lo)
        return {k: np.asarray(a[k]) + f * (np.asarray(b[k]) - np.asarray(a[k])) for k in a}

    def short_call_s(self, group: int, width: int, positions: float) -> float:
        """Seconds of a tile call of ``positions`` positions, input in L1 and aligned: the
        calls of a few positions timed whole (their FMA chains are shorter than the
        pipeline), else the fixed cost plus the cost per position."""
        t = self.tile(group, width, "l1", "aligned")
        long_call = t["call_s"] + positions * t["position_s"]
        if "few_s" not in t or positions >= FEW_UP_TO:
            return float(long_call)
        ns = [1, 2, 4, FEW_UP_TO]
        ts = list(t["few_s"]) + [t["call_s"] + FEW_UP_TO * t["position_s"]]
        return float(np.interp(positions, ns, ts))

    def position_s(self, group: int, width: int, streamed: float, split: float) -> float:
        """Seconds per non-zero position of a tile call whose input is streamed again and
        again over ``streamed`` bytes, ``split`` of its loads straddling lines: the calibrated
        working sets' prices interpolated in the logarithm of the size, but from twice L1's
        size on at least the L2 price and from twice L2's at least the price past L2 (lines
        streamed again over that much are all gone from the level below between two reads;
        the calibration's working sets just past L1 still find some in it)."""
        names = sorted(self.level_bytes, key=self.level_bytes.get)

        def at(lvl):
            aligned = self.tile(group, width, lvl, "aligned")["position_s"]
            rand = self.tile(group, width, lvl, "random")["position_s"]
            share = self.random_split[f"{lvl}/random"]
            return float(aligned + (rand - aligned) * (split / share if share else 0.0))
        prices = {lvl: at(lvl) for lvl in names}
        sizes = np.log([self.level_bytes[n] for n in names])
        curve = float(np.interp(math.log(max(streamed, 1.0)), sizes, list(prices.values())))
        l1, l2, l3 = prices["l1"], prices["l2"], prices["l3"]
        floor = (l1 + reload_share(streamed, self.l1_bytes) * (l2 - l1)
                 + reload_share(streamed, self.l2_bytes) * (l3 - l2))
        return max(curve, floor)

    def pad_row_s(self, path: str, width: int) -> float:
        """Seconds to pad one input row of ``width`` floats along ``path``: linear between
        the calibrated widths, and beyond them along the last two."""
        widths, row_s = self.padding[path]["widths"], self.padding[path]["row_s"]
        if width >= widths[-1]:
            slope = (row_s[-1] - row_s[-2]) / (widths[-1] - widths[-2])
            return float(row_s[-1] + slope * (width - widths[-1]))
        return float(np.interp(width, widths, row_s))

    def input_row_s(self, spec: ConvSpec, layout) -> float:
        """Seconds to pad one row of the input (read or skipped) for ``spec`` in ``layout``:
        a strided 1x1 kernel's from its own calibrated path, any other kernel's from its
        stride's path times the share of phases it reads (as a strided 1x1 kernel's too in a
        calibration taken before that path was added)."""
        if layout.aligned:
            return self.pad_row_s("aligned", spec.width) * layout.copies
        pointwise = pad_path(False, spec.stride[1], pointwise=True)
        if spec.kernel_h == spec.kernel_w == 1 and pointwise in self.padding:
            return self.pad_row_s(pointwise, spec.width)
        return self.pad_row_s(pad_path(False, spec.stride[1]), spec.width) * read_phase_share(spec)

    def stream_s(self, nbytes: float, working_set: float) -> float:
        """Seconds to move ``nbytes`` within a working set of ``working_set`` bytes. The triad
        was calibrated at half of each cache (and just past L2); from twice a calibrated
        working set on, the next one's rate holds (interpolated in the logarithm of the size
        in between)."""
        order = sorted(self.triad.values())
        points = []
        for (size, rate), (_, next_rate) in zip(order, order[1:]):
            points += [(size, rate), (2 * size, next_rate)]
        points.append(order[-1])
        sizes = np.log([size for size, _ in points])
        rate = float(np.interp(math.log(max(working_set, 1.0)), sizes,
                               [rate for _, rate in points]))
        return nbytes / (rate * 1e9)

    @property
    def l1_bytes(self) -> float:
        """L1's size: the triad's smallest working set is half of it."""
        return 2.0 * min(size for size, _ in self.triad.values())

    @property
    def l2_bytes(self) -> float:
        """L2's size: the triad's working set of that name is half of it."""
        return 2.0 * self.triad["l2"][0] if "l2" in self.triad else 2.0 * self.level_bytes["l2"]

    def beyond_l1_s(self, nbytes: float, working_set: float) -> float:
        """Seconds over the calibration's own price (its tiles timed on the smallest working
        set, in L1) of moving ``nbytes`` within ``working_set`` bytes."""
        in_l1 = min(self.level_bytes.values())
        return max(0.0, self.stream_s(nbytes, working_set) - self.stream_s(nbytes, in_l1))

    def call_overhead(self, threads: int) -> float:
        return self.call_s.get(threads) or max(self.call_s.values())


def steady_fixed_costs(tiles: dict) -> dict:
    """The calibrated tiles with each width's fixed costs (a call's, and the short calls'
    whole) replaced by the median of its own and its two neighbouring widths'. They grow
    smoothly with the width (the accumulators a call loads and stores), but one width's can
    come out high for a whole calibration, every round alike (AVX2 on a Zen 4: width 7 at
    6.5 ns a call where widths 6 and 8 cost 3.8 ns and other calibrations of the same build
    gave width 7 3.9-4.3 ns), and it then mispriced every layer that ran that width by about
    10%."""
    widths: dict = {}
    for key in tiles:
        group, width, level, offsets = key.split("/")
        widths.setdefault((group, level, offsets), []).append(int(width))
    out = {key: dict(value) for key, value in tiles.items()}
    for (group, level, offsets), ws in widths.items():
        keys = [f"{group}/{w}/{level}/{offsets}" for w in sorted(ws)]
        for before, key, after in zip(keys, keys[1:], keys[2:]):
            near = [tiles[k] for k in (before, key, after)]
            out[key]["call_s"] = float(np.median([t["call_s"] for t in near]))
            if all("few_s" in t for t in near):
                out[key]["few_s"] = np.median([t["few_s"] for t in near], axis=0).tolist()
    return out


def read_phase_counts(spec: ConvSpec) -> tuple[int, int]:
    """Row and column stride phases of a channel that the kernel's taps read, and so pads:
    all of them, but a kernel one tap high (wide) reads only the first row (column) phase."""
    (sh, sw), (kh, kw) = spec.stride, (spec.kernel_h, spec.kernel_w)
    return (sh if kh > 1 else 1), (sw if kw > 1 else 1)


def read_phases(spec: ConvSpec) -> int:
    """Stride phases of a channel that the kernel's taps read, and so pads."""
    rows, cols = read_phase_counts(spec)
    return rows * cols


def read_phase_share(spec: ConvSpec) -> float:
    """Share of a strided layout's phases that the kernel pads and reads."""
    return read_phases(spec) / (spec.stride[0] * spec.stride[1])


def pad_path(aligned: bool, stride_w: int, pointwise: bool = False) -> str:
    """The padding's copy path (harness.machine.roofs.PAD_PATHS) of a layout; ``pointwise``:
    a 1x1 kernel, which copies one stride phase only."""
    if aligned:
        return "aligned"
    path = {1: "stride1", 2: "stride2"}.get(stride_w, "strided")
    return f"pointwise_{path}" if pointwise and stride_w > 1 else path


def even_split(vectors: int, tile: int) -> list[int]:
    """The tile widths of tile.h's even split of a run of ``vectors`` vectors."""
    n = -(-vectors // tile)
    return [vectors * (i + 1) // n - vectors * i // n for i in range(n)]


@functools.lru_cache(maxsize=65536)
def unpredictable_count(slots: int, p: float) -> float:
    """Share of a group's non-empty tile calls whose count of non-zeros (of ``slots`` each
    present with probability ``p``) is not the most frequent one."""
    if slots < 1 or p <= 0.0 or p >= 1.0:
        return 0.0
    pmf = binom.pmf(np.arange(1, slots + 1), slots, p)
    total = pmf.sum()
    return float(1.0 - pmf.max() / total) if total > 0 else 0.0


def support_probability(density: float, group: int, pattern: str) -> float:
    """Probability that a position is in a group's support: the pattern's blocks share one
    support (a multiple of the group), else the union of ``group`` random supports."""
    if group == 1 or block_group(pattern) % group == 0 and block_group(pattern) > 1:
        return density
    return 1.0 - (1.0 - density) ** group


@functools.lru_cache(maxsize=4096)
def layout_split(spec: ConvSpec, layout, tile: int, lanes: int, piece: int = 0) -> float:
    """Share of the tiles' vector loads that straddle a cache line (loaded in pieces of
    ``piece`` floats), over every position of one channel block (uniform supports)."""
    if layout.aligned:
        return 0.0
    channels = min(layout.block_channels, spec.in_channels // spec.groups)
    w = np.ones((1, channels, spec.kernel_h, spec.kernel_w), np.float32)
    one = ConvSpec.from_shapes((1, channels, spec.height, spec.width), w.shape, spec.stride,
                               spec.padding, spec.dilation, 1)
    offsets = direct_csr(w, one, layout).colidx.astype(np.int64)
    return split_fraction(offsets % LINE_FLOATS, tile, lanes, piece)


def block_overlaps(channels: int, c_group: int, block: int, groups: int) -> list[float]:
    """Input channels of one conv group in each channel block that holds any (blocks run over
    all channels, so one may straddle two groups), averaged over the groups."""
    per_group = []
    for g in range(groups):
        lo, hi = g * c_group, (g + 1) * c_group
        per_group.append([min(hi, b + block) - max(lo, b)
                          for b in range(lo // block * block, hi, block)])
    width = max(len(o) for o in per_group)
    return [float(np.mean([o[i] if i < len(o) else 0 for o in per_group]))
            for i in range(width)]


def tile_window_bytes(spec: ConvSpec, layout, run_floats: int) -> float:
    """Bytes of a channel block that one tile's positions can read: per channel and stride
    phase (or shifted copy), the tile's run plus the reach of the kernel's rows and columns
    in that plane."""
    sh, sw = spec.stride
    reach_rows = (spec.kernel_h - 1) * spec.dilation[0] // sh
    reach_cols = 0 if layout.aligned else (spec.kernel_w - 1) * spec.dilation[1] // sw
    planes = layout.copies if layout.aligned else read_phases(spec)
    # a layout's plane holds every stride phase of a channel, but one shifted copy only
    plane = layout.plane if layout.aligned else layout.plane // (sh * sw)
    per_plane = min(plane, run_floats + reach_rows * layout.plane_w + reach_cols + LINE_FLOATS)
    return 4.0 * layout.block_channels * planes * per_plane


def accumulator_extra_s(costs: KernelCosts, moved: float, runs_bytes: float,
                        block_bytes: float) -> float:
    """Seconds over the calibration's price (accumulators in L1) of a tile call's ``moved``
    bytes of accumulators, its item's runs ``runs_bytes`` in all. Channel blocks are the
    kernel's outer loop, so between two visits of one accumulator line every other run of the
    item and the whole block pass through the caches: the runs live at the working set of
    both."""
    return costs.beyond_l1_s(moved, runs_bytes + block_bytes)


def nonzero_bytes(group: int) -> int:
    """Bytes the kernels store per position of a group's support: one column index and a
    value for each of the group's output channels."""
    return 4 + 4 * group


def reuse_share(touched: float) -> float:
    """Share of a block that passes through the cache between two reads of one of its lines
    when each output channel's tile calls touch ``touched`` of it, at random: the line comes
    back after about 1/touched channels, which touch 1 - (1 - touched)^(1/touched) of the
    block (all of it for a full sweep, down to 1 - 1/e for sparse touches). So a block a
    little past L1 whose channels touch a quarter of it each mostly stays there (AlexNet's
    conv3 at 90%, aligned, 16-channel blocks of 47 KB on a 32 KiB L1: 1.5x faster than priced
    as a full sweep)."""
    if touched >= 1.0:
        return 1.0
    if touched <= 0.0:
        return 1.0 - math.exp(-1.0)
    return 1.0 - (1.0 - touched) ** (1.0 / touched)


def reload_share(block_bytes: float, l1_bytes: float) -> float:
    """0 for a block that stays in L1 across output channels, 1 for one twice its size or
    more (in between, in the logarithm of the size)."""
    return float(np.clip(math.log(max(block_bytes, 1.0) / l1_bytes) / math.log(2.0), 0.0, 1.0))


def direct_time(costs: KernelCosts, spec: ConvSpec, density: float, plan: DirectPlan,
                threads: int, pattern: str = "random") -> dict:
    """Predicted seconds of one call, and its parts (summed over the items, per thread)."""
    lanes = costs.lanes
    G, mb = plan.out_group, plan.out_channel_block
    layout = direct_layout(spec, plan.aligned, lanes, plan.channel_block, plan.band_rows)
    bc = layout.block_channels
    band = band_height(spec, plan.band_rows)
    m_group, c_group = spec.out_channels // spec.groups, spec.in_channels // spec.groups
    area = spec.kernel_h * spec.kernel_w
    full_vectors = -(-band * layout.plane_w // lanes)
    block_bytes = 4 * (layout.copies * bc * layout.plane + full_vectors * lanes)
    read = read_phase_share(spec)  # of the phases padded and streamed (aligned: stride 1)
    read_bytes = block_bytes * read
    split = layout_split(spec, layout, min(full_vectors, plan.tile_vectors), lanes,
                         costs.load_piece)
    in_bytes = 4 * spec.batch * spec.in_channels * spec.height * spec.width
    out_bytes = 4 * spec.batch * spec.out_channels * spec.out_height * spec.out_width
    # the channels each block holds of a conv group's input channels (a block may hold fewer
    # at a group's edge, or the last block fewer)
    p = support_probability(density, G, pattern)
    overlaps = block_overlaps(spec.in_channels, c_group, bc, spec.groups)
    blocks = -(-spec.in_channels // bc)
    weight_bytes = -(-spec.out_channels // G) * p * area * c_group * nonzero_bytes(G)

    pad_row_s = costs.input_row_s(spec, layout)
    # the padding reads the input rows of the row phases read (all their lines)
    rows_read = read_phase_counts(spec)[0] / spec.stride[0]

    def pad_s(channels, rows):
        in_rows = min(spec.height, (rows - 1) * spec.stride[0] + spec.kernel_h)
        moved = (costs.stream_s(4 * channels * in_rows * spec.width * rows_read, in_bytes)
                 + costs.stream_s(4 * channels * layout.copies * layout.plane * read,
                                  block_bytes))
        return max(channels * in_rows * pad_row_s, moved)

    def item(channels: int, rows: int) -> dict:
        """One work item of ``channels`` output channels and ``rows`` output rows."""
        vectors = -(-rows * layout.plane_w // lanes)
        widths = even_split(vectors, plan.tile_vectors)
        acc_bytes = 4 * channels * vectors * lanes

        def acc_extra(width):
            return accumulator_extra_s(costs, 2 * 4 * G * width * lanes, acc_bytes,
                                       read_bytes)
        # The input each output channel streams again: with tiles inside output channels,
        # the whole block; with tiles outside them, one tile's window of it (every output
        # channel of the item streams through that before the next tile's, so the block is
        # read in from its level once). Past L1, each line a tile call touches comes from
        # the level that holds what is streamed: priced per byte as the calibration's tiles
        # stream from there (the hardware prefetchers overlap it with the FMAs), the lines
        # that a call's positions share (neighbouring taps of one channel) once.
        window = tile_window_bytes(spec, layout, widths[0] * lanes) / bc  # per channel
        # each output channel's calls touch only a share of it: between two reads of a line
        # less than all of it has passed through the cache (reuse_share)
        touched = min(1.0, p * bc * area * 4 * (widths[0] * lanes + LINE_FLOATS) / (window * bc))
        streamed = (window * bc if plan.tiles_outer else read_bytes) * reuse_share(touched)
        once = 0.0
        if plan.tiles_outer:
            once = reload_share(read_bytes, costs.l1_bytes) * costs.stream_s(
                len(overlaps) * read_bytes, read_bytes)
        counts = Counter(widths)
        l1_price = {w: float(costs.tile(G, w, "l1", "aligned")["position_s"]) for w in counts}
        price = {w: costs.position_s(G, w, streamed, 0.0) for w in counts}
        per_byte = {w: (price[w] - l1_price[w]) / (4 * w * lanes) for w in counts}
        split_extra = sum(k * (costs.position_s(G, w, streamed, split) - price[w])
                          for w, k in counts.items())

        def block_s(n):  # one group's tile calls over a block holding n of its channels
            positions = p * n * area
            nonempty = 1.0 - (1.0 - p) ** (n * area)
            per_call = positions / nonempty if nonempty else 0.0  # in a call that has any
            calls = sum(k * (costs.short_call_s(G, w, per_call) + acc_extra(w))
                        for w, k in counts.items())
            # the calibration's calls repeat one count; here whether a group has any non-zero
            # in the block, and how many, are random: the predictor misses the rarer outcome
            # of the test and the loop's end unless one count dominates (counted once per
            # group and block: with tiles outside channels, each tile repeats the first's)
            misses = min(nonempty, 1.0 - nonempty) + nonempty * unpredictable_count(n * area, p)
            touched = sum(k * per_byte[w] * min(window * n,
                                                positions * 4 * (w * lanes + LINE_FLOATS))
                          for w, k in counts.items())
            return np.array([nonempty * calls + misses * costs.branch_miss_s,
                             positions * split_extra, touched])
        tiles, splits, reloads = -(-channels // G) * sum(
            k * block_s(n) for n, k in Counter(overlaps).items())
        # the item's non-zeros (an index per position, a value per channel of its group),
        # streamed once per item: from the level that holds all of the layer's
        nonzeros = -(-channels // G) * p * area * sum(overlaps) * nonzero_bytes(G)
        streaming = costs.beyond_l1_s(nonzeros, weight_bytes)
        stored = 4 * channels * rows * spec.out_width
        # padding: the input channels of the conv groups the item's channels belong to
        channels_read = min(spec.in_channels, -(-channels // m_group) * c_group)
        return {"tiles_s": tiles, "split_loads_s": splits, "reloads_s": reloads + once,
                "weights_s": streaming,
                "padding_s": 0.0 if plan.shared_padding else pad_s(channels_read, rows),
                "accumulators_s": costs.stream_s(acc_bytes, acc_bytes) if blocks > 1 else 0.0,
                "stores_s": costs.stream_s(stored, out_bytes)}

    # the items in the kernel's order (image, band, block of output channels), dealt to the
    # threads in turn
    kinds, order = {}, []
    for y0 in range(0, spec.out_height, band):
        for m0 in range(0, spec.out_channels, mb):
            key = (min(mb, spec.out_channels - m0), min(band, spec.out_height - y0))
            if key not in kinds:
                kinds[key] = item(*key)
            order.append(key)
    order *= spec.batch
    finish = [0.0] * threads
    for i, key in enumerate(order):
        finish[i % threads] += sum(kinds[key].values())
    parts = {k: sum(kinds[key][k] for key in order) / threads  # none for an empty batch
             for k in next(iter(kinds.values()))}
    shared = pad_s(spec.batch * spec.in_channels, spec.out_height) / threads \
        if plan.shared_padding else 0.0
    parts["padding_s"] += shared
    call = costs.call_overhead(threads)
    return {"total_s": call + shared + max(finish), **parts, "call_s": call,
            "block_bytes": block_bytes, "split": split}


def plan_for(spec: ConvSpec, max_tile: int, threads: int,
             plan: DirectPlan | None) -> DirectPlan:
    """The plan a row ran with, else the default plan for unstructured weights."""
    return plan or plan_with_tile(spec, max_tile, threads)


def predicted_sweet_spot(speedup, grid: np.ndarray) -> dict:
    """Crossover and upper bound of a predicted speedup curve over ``grid``, by the same
    rules as the measured ones (harness.sweep.results, harness.models.fitted)."""
    v = np.array([speedup(float(s)) for s in grid])
    return {"predicted_crossover": crossover_sparsity(grid, v),
            "predicted_upper": measured_upper(grid, v),
            "predicted_speedup_at_top": float(v[-1]), "top_sparsity": float(grid[-1])}


def zero_shot(costs: KernelCosts, rows: pd.DataFrame) -> np.ndarray:
    """Predicted seconds of a sweep's direct-kernel rows, each with the plan it ran."""
    out = []
    for _, r in rows.iterrows():
        spec = row_spec(r)
        plan = plan_for(spec, costs.max_tile, int(r["threads"]), plan_of(r))
        out.append(direct_time(costs, spec, row_density(r, spec), plan, int(r["threads"]),
                               str(r.get("pattern", "random")))["total_s"])
    return np.array(out)


def zero_shot_validation(costs: KernelCosts, rows: pd.DataFrame, predict=zero_shot) -> dict:
    """Zero-shot predictions (``predict(costs, rows)``: the direct kernel's by default)
    against a sweep's measurements: per point, and each layer's crossover with the sweep's own
    best dense time."""
    predicted = predict(costs, rows)
    rel = np.abs(predicted / rows["median_s"].to_numpy() - 1)
    crossovers = {}
    frame = rows.assign(zero_shot_s=predicted)
    for (net, layer, b, t), g in frame.dropna(subset=["best_dense_s"]).groupby(
            ["network", "layer", "batch", "threads"]):
        s = g["sparsity"].to_numpy()
        measured = crossover_sparsity(s, (g["best_dense_s"] / g["median_s"]).to_numpy())
        zero = crossover_sparsity(s, (g["best_dense_s"] / g["zero_shot_s"]).to_numpy())
        crossovers[f"{net}/{layer}|{int(b)}|{int(t)}"] = {"measured": measured, "zero_shot": zero,
                                                    "error": zero - measured}
    errors = [abs(v["error"]) for v in crossovers.values() if np.isfinite(v["error"])]
    return {"predicted_s": predicted, "median_rel_error": float(np.median(rel)),
            "worst_rel_error": float(rel.max()), "crossovers": crossovers,
            "worst_crossover_error": max(errors, default=float("nan")),
            "crossovers_within_0.05": int(sum(e <= 0.05 for e in errors)),
            "crossovers_compared": len(errors)}
