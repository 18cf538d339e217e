#!/usr/bin/env python3
"""Shared padding against per-work-item padding for the direct kernel, side by side.

For each AlexNet layer (conv2-5) at one sparsity, batch and thread count, times a small grid of
plans (work items of M/threads and 2M/threads output channels, input-channel blocks of 16 and
32, rows and aligned layouts) with and without shared padding, in interleaved rounds, each plan
verified first, and prints the best of each kind and their ratio. Usage:
    python bench/shared_padding.py [--threads 2] [--batch 1] [--sparsity 0.9] [--rounds 7]
"""

import argparse
import os
import sys

os.environ.setdefault("OMP_PROC_BIND", "close")
os.environ.setdefault("OMP_PLACES", "cores")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from harness import kernels  # noqa: E402
from harness.kernels.native import host_kernels  # noqa: E402
from harness.timing import interleaved_medians, measure  # noqa: E402
from harness.conv.verify import verify  # noqa: E402
from problems import alexnet_problems, run_bench  # noqa: E402


def plan_grid(spec, threads: int, max_tile: int) -> list:
    m = spec.out_channels
    blocks = sorted({max(1, m // threads), max(1, 2 * m // threads)})
    return [kernels.DirectPlan(max_tile, mb, bc, aligned, False, shared)
            for mb in blocks for bc in (16, 32) for aligned in (False, True)
            for shared in (False, True)]


def describe(plan) -> str:
    return (f"items of {plan.out_channel_block} channels, blocks of {plan.channel_block}, "
            f"{'aligned' if plan.aligned else 'rows'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--layers", default="conv2,conv3,conv4,conv5")
    args = ap.parse_args()
    print(f"sparsity {args.sparsity}, batch {args.batch}, threads {args.threads}, median of "
          f"{args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.2f}")
    max_tile = host_kernels().lib.spconv_max_tile_vectors()
    for layer, spec, w, x, ref in alexnet_problems(args.layers, args.sparsity, args.batch):
        prepared = {}
        for plan in plan_grid(spec, args.threads, max_tile):
            k = kernels.prepare(w, input_shape=spec.input_shape, stride=spec.stride,
                                padding=spec.padding, groups=spec.groups, threads=args.threads,
                                plan=plan)
            if not verify(k(x), ref).ok:
                print(f"{layer.name}: wrong output with {plan}")
                return 1
            prepared[plan] = k
        out = np.empty(spec.output_shape, np.float32)
        median = interleaved_medians(prepared, lambda plan: measure(
            lambda: prepared[plan](x, out=out), repeats=3, min_time=0.02).median, args.rounds)
        shared = min((p for p in median if p.shared_padding), key=median.get)
        own = min((p for p in median if not p.shared_padding), key=median.get)
        print(f"{layer.name}: shared {median[shared] * 1e3:.3f} ms ({describe(shared)}); "
              f"per item {median[own] * 1e3:.3f} ms ({describe(own)}); "
              f"shared is {median[own] / median[shared]:.2f}x as fast")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
