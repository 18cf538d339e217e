#!/usr/bin/env python3
"""The register-tiled sparse inner loop alone: how its speed depends on where its input lives.

Every non-zero of a sparse row adds weight x (one run of the input) into accumulators held in
registers, as the direct kernel does for an output channel. Here the runs start at random
offsets inside an input buffer of a chosen size, either on vector boundaries (the aligned
layout) or anywhere (the rows layout), so the loop's speed can be read against the cache level
that holds the input. Printed: vector FMAs per second and the share of the calibrated peak of
one thread they reach (each FMA counted with all its lanes). Usage:
    python bench/inner_loop.py [--run-vectors 13] [--nnz 200] [--rounds 7]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from harness.machine.calibrate import calibration  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from harness.kernels.native import aligned_zeros, float_ptr, host_kernels, int_ptr  # noqa: E402
from harness.timing import measure  # noqa: E402
from problems import run_bench  # noqa: E402

FOOTPRINTS_KIB = (8, 24, 48, 96, 256, 768)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-vectors", type=int, default=13, help="vectors per run (13x13: 13)")
    ap.add_argument("--nnz", type=int, default=200, help="non-zeros per row")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    built, host = host_kernels(), detect_host()
    lib, vec = built.lib, built.lib.spconv_vector_floats()
    peak = calibration(built, host, 1)["fma_gflops_1"]["median"]
    tile = min(args.run_vectors, lib.spconv_max_tile_vectors())
    n = args.run_vectors * vec
    print(f"host {host.cpu_model}, {built.isa}; calibrated peak {peak:.1f} GFLOP/s (1 thread); "
          f"runs of {args.run_vectors} vectors, register tile {tile}, {args.nnz} non-zeros a row")
    rng = np.random.default_rng(0)
    rowptr = np.arange(args.rows + 1, dtype=np.int32) * args.nnz
    values = rng.standard_normal(args.rows * args.nnz).astype(np.float32)
    out = np.empty(args.rows * n, np.float32)
    scratch = np.empty(n + vec, np.float32)
    calls = {}  # (the cffi pointers keep their arrays alive)
    for kib in FOOTPRINTS_KIB:
        span = kib * 256
        dense = aligned_zeros(span + n + vec, 64)  # so "aligned" runs are line-aligned
        dense[:] = rng.standard_normal(dense.size)
        for aligned in (True, False):
            offsets = rng.integers(0, span, args.rows * args.nnz)
            colidx = (offsets // vec * vec if aligned else offsets).astype(np.int32)
            calls[kib, aligned] = (
                args.rows, n, int_ptr(built, rowptr), int_ptr(built, colidx),
                float_ptr(built, values), float_ptr(built, dense), built.ffi.NULL, 0, tile,
                float_ptr(built, scratch), float_ptr(built, out), 1)
    samples = {key: [] for key in calls}
    for _ in range(args.rounds):  # interleaved, so drift of the machine hits every case alike
        for key, call in calls.items():
            samples[key].append(measure(lambda: lib.spconv_csr_spmm(*call), repeats=3,
                                        min_time=0.02).median)
    print(f"{'input KiB':>9} {'layout':>9} {'G vector FMA/s':>15} {'% of peak':>10}")
    for (kib, aligned), times in samples.items():
        fmas = args.rows * args.nnz * args.run_vectors / float(np.median(times))
        print(f"{kib:9d} {'aligned' if aligned else 'unaligned':>9} {fmas / 1e9:15.2f} "
              f"{100 * fmas * 2 * vec / 1e9 / peak:9.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
