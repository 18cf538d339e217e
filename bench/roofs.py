#!/usr/bin/env python3
"""The roofs that bind the direct kernel's inner loop on this host, and where its register
tiles sit against them.

Measured, one thread: vector loads and scalar broadcasts per second from L1 and from L2 (a
buffer of a quarter of L1, and of half of L2), and FMA throughput with 1-4 FMAs per loaded
vector. Then, for each register tile the kernel has (today's unstructured tile, one output
channel per input load; the grouped tiles of the block patterns, 2 and 4 channels per load),
its loads per FMA, the ceiling the load and FMA roofs set for it, and its measured rate on a
block of input in L1 and in L2. Usage:
    python bench/roofs.py [--rounds 5] [--positions 64]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from harness.kernels.native import aligned_zeros, float_ptr, host_kernels, int_ptr  # noqa: E402
from harness.machine.calibrate import calibration  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from harness.machine.roofs import load_rates  # noqa: E402
from harness.timing import interleaved_medians, measure  # noqa: E402
from problems import run_bench  # noqa: E402


def buffer_floats(kib: float, vector: int) -> int:
    """A buffer of about ``kib`` KiB in whole multiples of 12 vectors (as the loops need)."""
    unit = 12 * vector
    return max(unit, int(kib * 256) // unit * unit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    ap.add_argument("--positions", type=int, default=256, help="non-zeros a tile streams")
    args = ap.parse_args()
    built, host = host_kernels(), detect_host()
    lib, vec = built.lib, built.lib.spconv_vector_floats()
    peak = calibration(built, host, 1)["fma_gflops_1"]["median"]
    fma_rate = peak * 1e9 / (2 * vec)  # vector FMAs per second at the calibrated peak
    levels = {"L1": host.caches_kib.get("l1d", 32) / 4, "L2": host.caches_kib.get("l2", 512) / 2}
    print(f"host {host.cpu_model}, {built.isa} ({vec} floats a vector); calibrated FMA peak "
          f"{peak:.1f} GFLOP/s on 1 thread = {fma_rate / 1e9:.2f} G vector FMA/s; "
          f"median of {args.rounds} interleaved rounds")

    rates = {}  # (level, kind, FMAs per load) -> loads per second
    for key, g_per_s in load_rates(built, host, args.rounds).items():
        lvl, kind, fmas = key.split("/")
        rates[lvl.upper(), kind, int(fmas)] = g_per_s * 1e9
    print(f"\n{'level':>5} {'loads':>9} {'FMAs/load':>9} {'G loads/s':>10} {'per peak FMA':>12} "
          f"{'% FMA peak':>10}")
    for (lvl, kind, fmas), rate in rates.items():
        print(f"{lvl:>5} {kind:>9} {fmas:9d} {rate / 1e9:10.2f} {rate / fma_rate:12.2f} "
              f"{100 * rate * fmas / fma_rate:9.1f}%")
        # the roof: the most loads a loop of any kind completed from that level
    load_roof = {lvl: max(r for (level, _, _), r in rates.items() if level == lvl)
                 for lvl in levels}
    print("load roof: " + ", ".join(f"{lvl} {r / 1e9:.2f} G loads/s ({r / fma_rate:.2f} per "
                                    "peak FMA)" for lvl, r in load_roof.items()))

    # the register tiles: (output channels per load, tile vectors); a position costs T vector
    # loads, G weight broadcasts and one index for G * T FMAs
    tiles = [(1, lib.spconv_max_tile_vectors()), (1, min(13, lib.spconv_max_tile_vectors()))]
    tiles += [(g, lib.spconv_max_group_tile(g)) for g in (2, 4)]
    rng = np.random.default_rng(1)
    cases = {}  # (the cffi pointers keep their arrays alive)
    for lvl, kib in levels.items():
        # runs start anywhere in two thirds of the buffer and reach into the rest: one call
        # streams every position through several tiles, so the call overhead is a few percent
        span = buffer_floats(kib, vec)
        starts = span * 2 // 3 // vec
        base = aligned_zeros(span + vec, 64)
        base[:] = rng.standard_normal(base.size)
        colidx = (rng.integers(0, starts, args.positions) * vec).astype(np.int32)
        for g, t in tiles:
            run = max(1, (span - starts * vec) // (t * vec)) * t * vec
            values = rng.standard_normal(args.positions * g).astype(np.float32)
            acc = aligned_zeros(g * run, 64)
            cases[lvl, g, t] = (float_ptr(built, acc), run, run, float_ptr(built, base),
                                int_ptr(built, colidx), float_ptr(built, values), args.positions,
                                g, t)

    def time_tile(key):
        call = cases[key]
        return measure(lambda: lib.spconv_accumulate_group(*call), repeats=3,
                       min_time=0.01).median

    times = interleaved_medians(list(cases), time_tile, args.rounds)
    print(f"\n{'tile':>10} {'loads/FMA':>9} {'ceiling':>8} " +
          " ".join(f"{lvl + ' measured':>12}" for lvl in levels))
    for g, t in tiles:
        per_fma = (t + g + 1) / (g * t)
        ceiling = min(1.0, load_roof["L1"] / fma_rate / per_fma)
        measured = [args.positions * g * cases[lvl, g, t][1] / vec / times[lvl, g, t] / fma_rate
                    for lvl in levels]
        print(f"{f'{g}ch x {t}v':>10} {per_fma:9.2f} {100 * ceiling:7.1f}% " +
              " ".join(f"{100 * m:11.1f}%" for m in measured))
    print("(ceiling: the L1 load roof over the tile's loads per FMA, capped at the FMA peak; "
          "% of the FMA peak in lanes, junk lanes of a layer's rows not discounted)")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
