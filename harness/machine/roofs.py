"""Calibration of the roofs that bind the sparse kernels' inner loop, one thread.

- Load throughput: loops of vector loads, of scalar broadcasts, and of 1-4 FMAs per loaded
  vector, over a buffer sized for each cache level.
- What a vector load straddling a cache line costs: where the core loads a vector in halves
  (a Zen 4 loads 512 bits as two 256-bit halves), a load that straddles a line at its middle
  costs no more than an aligned one, and only loads whose half straddles pay.
- The register tiles themselves (kernels_c/tile.c, every group size, widths up to the widest):
  seconds per non-zero position, with the positions vector-aligned and at random offsets
  (loads that straddle cache lines), the input in each cache level; and the fixed cost of one
  tile call (its accumulators loaded and stored).
- The padding (kernels_c/direct.c's copy of a channel into its padded layout): seconds per
  input row, by row width, for each copy path (stride 1, 2 and larger, shifted copies). Its
  cost is set by instructions per row, not by where the input lives: on an AMD EPYC (Zen 5)
  rows of 56 floats cost 5.3 ns at stride 1 and 9.5 ns at stride 2 whether the input was
  49 KiB or 3 MiB.
- A mispredicted branch: the kernel's tests of whether a group has non-zeros in a block, and
  the ends of its loops over non-zeros, go one way or the other at random in sparse weights;
  timed as the same tile calls in random and in sorted order.
- Call overhead: one call of the direct kernel on a problem too small to cost anything else,
  from Python, per thread count.

Each is the fastest of ROUNDS interleaved rounds: on a shared host the load of others only
adds time. These are the machine constants of the mechanistic model
(harness.models.mechanistic): it sets a layer's time from the plan's counts and these rates
alone, without timing the layer.
"""

from __future__ import annotations

import numpy as np

from harness.conv.convspec import ConvSpec
from harness.conv.sparsity import direct_geometry, direct_layout
from harness.machine.build import BuiltKernels, aligned_zeros, float_ptr, int_ptr
from harness.machine.hostinfo import HostInfo
from harness.timing import interleaved_fastest, measure

LOAD_LOOPS = (("vector", 0), ("broadcast", 0), ("vector", 1), ("vector", 2), ("vector", 3),
              ("vector", 4))
POSITIONS = (8, 128)        # non-zeros per tile call: the fixed cost and the cost per position
FEW_POSITIONS = (1, 2, 4)   # tile calls this short, timed whole (their FMA chains are short)
# tiles per timed run, each on its own accumulators, as the kernel walks a run: the same tile
# called again on the same accumulators would wait for its own stores
RUN_TILES = 8
LINE_FLOATS = 16            # a 64-byte cache line
# The padding's copy paths (direct.c's pad_channel), as (stride, aligned, kernel size):
# unaligned at column stride 1, 2 and more (strided copies element by element, calibrated at
# 4), the aligned layout's shifted copies, and a strided 1x1 kernel's, which copies only the
# rows and columns of its one stride phase (the other rows skipped, each copied row's loop
# costs about as much as one of all phases)
PAD_PATHS = {"stride1": (1, False, 3), "stride2": (2, False, 3), "strided": (4, False, 3),
             "aligned": (1, True, 3), "pointwise_stride2": (2, False, 1),
             "pointwise_strided": (4, False, 1)}
PAD_WIDTHS = (7, 14, 28, 56, 112, 224)  # input row widths calibrated (interpolated between)
PAD_ROWS, PAD_CHANNELS = 8, 8           # one padding call's image
ROUNDS = 5  # interleaved rounds of every timing; the fastest is kept (interleaved_fastest)


def level_bytes(host: HostInfo) -> dict[str, int]:
    """The working sets the tiles are measured over: from a quarter of L1 to past L2 (4x L2,
    inside any last-level cache of a server part), with steps through L1's edge, where a
    kernel's padded block usually sits."""
    caches = host.caches_kib
    l1, l2 = caches.get("l1d", 32) * 1024, caches.get("l2", 512) * 1024
    return {"l1": l1 // 4, "l1_full": l1 * 3 // 4, "l1_over": l1 * 3 // 2, "l2": l2 // 2,
            "l3": 4 * l2}


def _floats(nbytes: int, vector: int) -> int:
    unit = 12 * vector  # the load loops unroll 12 vectors
    return max(unit, nbytes // 4 // unit * unit)


def load_rates(built: BuiltKernels, host: HostInfo, rounds: int = ROUNDS) -> dict:
    """G loads per second by level, kind and FMAs per load."""
    lib, vec = built.lib, built.lib.spconv_vector_floats()
    levels = {k: v for k, v in level_bytes(host).items() if k in ("l1", "l2")}
    buffers = {lvl: aligned_zeros(_floats(nbytes, vec), 64) for lvl, nbytes in levels.items()}
    for b in buffers.values():
        b[:] = np.random.default_rng(0).standard_normal(b.size)

    def time_loop(key):
        lvl, kind, fmas = key
        buf = buffers[lvl]
        passes = max(1, 2_000_000 // buf.size)
        call = (float_ptr(built, buf), buf.size, passes, fmas, int(kind == "broadcast"))
        seconds = measure(lambda: lib.spconv_load_loop(*call), repeats=3, min_time=0.01).median
        return seconds / (passes * (buf.size if kind == "broadcast" else buf.size // vec))

    keys = [(lvl, kind, fmas) for lvl in levels for kind, fmas in LOAD_LOOPS]
    per_load = interleaved_fastest(keys, time_loop, rounds)
    return {f"{lvl}/{kind}/{fmas}": 1e-9 / s for (lvl, kind, fmas), s in per_load.items()}


def measured_widths(widest: int) -> list[int]:
    """The tile widths calibrated: every one up to 8, then every fourth and the widest (the
    model interpolates between them: a tile's cost grows about linearly with its width)."""
    return sorted({*range(1, min(widest, 8) + 1), *range(12, widest + 1, 4), widest})


def tile_shapes(built: BuiltKernels) -> list[tuple[int, int]]:
    """(group, tile width) of the register tiles calibrated."""
    lib = built.lib
    return [(g, t) for g in (1, 2, 4) for t in measured_widths(lib.spconv_max_group_tile(g))]


def split_fraction(offsets: np.ndarray, vectors: int, vector: int, piece: int = 0) -> float:
    """Share of the vector loads at these float offsets (vectors consecutive loads each) that
    straddle a cache line (the buffer starts on a line), where the core loads each vector in
    pieces of ``piece`` floats (0: the whole vector): a load pays for the split
    when one of its pieces straddles."""
    piece = piece or vector
    starts = np.asarray(offsets)[:, None] + vector * np.arange(vectors)[None, :]
    pieces = (starts[..., None] + piece * np.arange(vector // piece)) % LINE_FLOATS
    return float(np.mean((pieces > LINE_FLOATS - piece).any(axis=-1)))


def tile_call_s(built: BuiltKernels, args: tuple) -> float:
    """Seconds of one tile call of spconv_tile_repeat's ``args`` (a run of RUN_TILES tiles),
    timed 64 runs to a C call: the caller's overhead per call would swamp a tile."""
    reps = 64
    return measure(lambda: built.lib.spconv_tile_repeat(reps, *args), repeats=3,
                   min_time=0.002).median / reps / RUN_TILES


def load_piece(built: BuiltKernels, rounds: int = ROUNDS) -> int:
    """Floats of the pieces the core loads a vector in, as far as line splits go: half the
    vector where a load that straddles a line at its middle costs less than half as much
    over an aligned one as a load that straddles it one float in (both in L1, the widest
    one-group tile), else the whole vector."""
    lib, vec = built.lib, built.lib.spconv_vector_floats()
    if vec < 2:
        return vec
    width = lib.spconv_max_group_tile(1)
    rng = np.random.default_rng(4)
    span = 1024  # floats, 4 KiB: in L1 on any core
    base = aligned_zeros(span + RUN_TILES * width * vec + LINE_FLOATS, 64)
    base[:] = rng.standard_normal(base.size)
    run = RUN_TILES * width * vec
    acc = aligned_zeros(run, 64)
    values = rng.standard_normal(POSITIONS[-1]).astype(np.float32)
    lines = np.sort(rng.integers(0, span // LINE_FLOATS, POSITIONS[-1])) * LINE_FLOATS
    colidx = {name: (lines + shift).astype(np.int32) for name, shift in
              (("aligned", 0), ("middle", LINE_FLOATS - vec // 2), ("edge", LINE_FLOATS - 1))}

    def time_case(key):
        name, npos = key
        return tile_call_s(built, (float_ptr(built, acc), run, run, float_ptr(built, base),
                                   int_ptr(built, colidx[name]), float_ptr(built, values),
                                   npos, 1, width))
    times = interleaved_fastest([(n, p) for n in colidx for p in POSITIONS], time_case, rounds)
    per = {n: times[n, POSITIONS[1]] - times[n, POSITIONS[0]] for n in colidx}
    middle, edge = per["middle"] - per["aligned"], per["edge"] - per["aligned"]
    return vec // 2 if edge > 0 and middle < 0.5 * edge else vec


def tile_costs(built: BuiltKernels, host: HostInfo, rounds: int = ROUNDS,
               piece: int = 0) -> dict:
    """Per tile (group g, width t), level and offsets (aligned or random): seconds per
    position and per tile call, from calls of POSITIONS[0] and POSITIONS[1] positions; and the
    share of split loads the random offsets had (loads in pieces of ``piece`` floats)."""
    vec = built.lib.spconv_vector_floats()
    rng = np.random.default_rng(1)
    shapes = tile_shapes(built)
    widest = max(t for _, t in shapes)
    cases, keep, split = {}, [], {}
    for lvl, nbytes in level_bytes(host).items():
        span = _floats(nbytes, vec)
        base = aligned_zeros(span + RUN_TILES * widest * vec + LINE_FLOATS, 64)
        base[:] = rng.standard_normal(base.size)
        keep.append(base)
        for offsets in ("aligned", "random"):
            # ascending, as the kernel streams each output channel's positions in a block
            cols = np.sort(rng.integers(0, span // LINE_FLOATS, POSITIONS[-1])) * LINE_FLOATS
            if offsets == "random":
                cols = cols + rng.integers(0, LINE_FLOATS, cols.size)
            colidx = cols.astype(np.int32)
            keep.append(colidx)
            split[lvl, offsets] = split_fraction(colidx, widest, vec, piece)
            for g, t in shapes:
                values = rng.standard_normal(POSITIONS[-1] * g).astype(np.float32)
                run = RUN_TILES * t * vec
                acc = aligned_zeros(g * run, 64)
                keep += [values, acc]
                few = FEW_POSITIONS if (lvl, offsets) == ("l1", "aligned") else ()
                for npos in few + POSITIONS:
                    cases[g, t, lvl, offsets, npos] = (
                        float_ptr(built, acc), run, run, float_ptr(built, base),
                        int_ptr(built, colidx), float_ptr(built, values), npos, g, t)

    def time_case(key):
        return tile_call_s(built, cases[key])

    times = interleaved_fastest(list(cases), time_case, rounds)
    out = {}
    for g, t in shapes:
        for lvl in level_bytes(host):
            for offsets in ("aligned", "random"):
                lo, hi = (times[g, t, lvl, offsets, n] for n in POSITIONS)
                per_position = max(0.0, (hi - lo) / (POSITIONS[1] - POSITIONS[0]))
                fixed = max(0.0, lo - POSITIONS[0] * per_position)
                out[f"{g}/{t}/{lvl}/{offsets}"] = {"position_s": per_position, "call_s": fixed}
        # calls of a few positions, whole: the fixed cost above is extrapolated from 8
        out[f"{g}/{t}/l1/aligned"]["few_s"] = [times[g, t, "l1", "aligned", n]
                                               for n in FEW_POSITIONS]
    return {"tiles": out, "random_split": {f"{lvl}/{o}": v for (lvl, o), v in split.items()},
            "level_bytes": level_bytes(host)}


def padding_costs(built: BuiltKernels, rounds: int = ROUNDS) -> dict:
    """Seconds per input row of the padding, per copy path (PAD_PATHS) and row width
    (PAD_WIDTHS): the path's kernel (a 3-wide one padded by 1, or a 1x1 one unpadded) at its
    stride; a shifted-copies row costs per copy (the layout has 3). The image is PAD_CHANNELS
    channels of PAD_ROWS rows, every one counted (those a strided 1x1 kernel skips too)."""
    ffi, lib, vec = built.ffi, built.lib, built.lib.spconv_vector_floats()
    rng = np.random.default_rng(2)
    cases, keep = {}, []
    for path, (stride, aligned, kernel) in PAD_PATHS.items():
        for width in PAD_WIDTHS:
            spec = ConvSpec.from_shapes((1, PAD_CHANNELS, PAD_ROWS, width),
                                        (1, PAD_CHANNELS, kernel, kernel), stride, kernel // 2)
            layout = direct_layout(spec, aligned, vec)
            g = ffi.new("spconv_geometry *", direct_geometry(spec, layout))
            x = rng.standard_normal(PAD_CHANNELS * PAD_ROWS * width).astype(np.float32)
            block = aligned_zeros(layout.copies * PAD_CHANNELS * layout.plane + vec, 64)
            keep += [g, x, block]
            rows = PAD_CHANNELS * PAD_ROWS * layout.copies
            cases[path, width] = (g, float_ptr(built, x), float_ptr(built, block), rows)
    reps = 16

    def time_case(key):
        g, x, block, rows = cases[key]
        seconds = measure(lambda: lib.spconv_pad_repeat(reps, g, PAD_CHANNELS, x, block),
                          repeats=3, min_time=0.002).median
        return seconds / reps / rows

    times = interleaved_fastest(list(cases), time_case, rounds)
    return {path: {"widths": list(PAD_WIDTHS), "row_s": [times[path, w] for w in PAD_WIDTHS]}
            for path in PAD_PATHS}


def branch_miss(built: BuiltKernels, rounds: int = ROUNDS) -> float:
    """Seconds one mispredicted branch costs: 1-vector tile calls of one position for half
    of 2^16 groups (the others skipped), their order random (the predictor misses half of
    the tests) against sorted (it misses none)."""
    lib, vec = built.lib, built.lib.spconv_vector_floats()
    rng = np.random.default_rng(3)
    groups, runs = 1 << 16, 64
    counts = {"random": (rng.random(groups) < 0.5).astype(np.int32)}
    counts["sorted"] = np.sort(counts["random"])
    base = aligned_zeros(4 * vec, 64)
    acc = aligned_zeros(runs * vec, 64)
    colidx, values = np.zeros(1, np.int32), np.ones(1, np.float32)

    def time_order(order):
        args = (float_ptr(built, acc), vec, runs, groups, vec, float_ptr(built, base),
                int_ptr(built, colidx), float_ptr(built, values), int_ptr(built, counts[order]),
                1, 1)
        return measure(lambda: lib.spconv_tile_channels(1, *args), repeats=3,
                       min_time=0.01).median

    t = interleaved_fastest(list(counts), time_order, rounds)
    return max(0.0, 2.0 * (t["random"] - t["sorted"]) / groups)


def call_overhead(built: BuiltKernels, threads: int) -> float:
    """Seconds of one direct-kernel call from Python on a 1x1-channel, 1-pixel problem: the
    cffi call, the kernel's checks and its OpenMP parallel region."""
    ffi, lib = built.ffi, built.lib
    vec = lib.spconv_vector_floats()
    g = ffi.new("spconv_geometry *", dict(
        batch=1, channels=1, height=1, width=1, out_channels=1, out_height=1, out_width=1,
        pad_h=0, pad_w=0, stride_h=1, stride_w=1, plane_h=1, plane_w=vec, copies=1,
        copy_shift=1))
    p = ffi.new("spconv_plan *", dict(
        tile_vectors=1, out_channel_block=1, channel_blocks=1, block_channels=1, tiles_outer=0,
        shared_padding=0, band_rows=0, out_group=1, threads=threads))
    blkptr, colidx = np.array([0, 1], np.int32), np.zeros(1, np.int32)
    values, x = np.ones(1, np.float32), np.ones(1, np.float32)
    padded = aligned_zeros(lib.spconv_padded_floats(g, p), 64)
    scratch = aligned_zeros(lib.spconv_scratch_floats(g, p), 64)
    out = np.zeros(1, np.float32)
    args = (g, p, int_ptr(built, blkptr), int_ptr(built, colidx), float_ptr(built, values),
            ffi.NULL, 0, float_ptr(built, x), float_ptr(built, padded),
            float_ptr(built, scratch), float_ptr(built, out))
    return measure(lambda: lib.spconv_direct(*args), repeats=5, min_time=0.01).median


def run_roofs(built: BuiltKernels, host: HostInfo, threads: int) -> dict:
    piece = load_piece(built)
    return {"rounds": ROUNDS, "loads_g_per_s": load_rates(built, host),
            "load_piece_floats": piece, **tile_costs(built, host, piece=piece),
            "padding": padding_costs(built), "branch_miss_s": branch_miss(built),
            "call_s": {str(t): call_overhead(built, t) for t in sorted({1, threads})}}
