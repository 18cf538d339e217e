#!/usr/bin/env python3
"""Direct sparse vs oneDNN vs dense_gemm vs lowered_sparse on AlexNet conv2-5 at 90% sparsity.

All methods are timed in one run, layer by layer, in interleaved rounds so that drift of the
machine hits every method alike; the median over rounds is reported. Direct sparse runs the
tuned plan from the tuning database (searched and stored when missing); --tune cached leaves
a missing one to prepare(), as a user's call does (the performance model's plan where this
host is calibrated, else the default plan); --tune off always runs the default plan. Usage:
    python bench/alexnet_90.py [--sparsity 0.9] [--batch 1] [--threads 1,2] [--rounds 5]
Several thread counts are timed in the same interleaved rounds, so their ratio (the scaling)
is measured side by side too.
"""

import argparse
import os
import sys

os.environ.setdefault("OMP_PROC_BIND", "close")
os.environ.setdefault("OMP_PLACES", "cores")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from scipy.stats import gmean as geomean  # noqa: E402

from harness import kernels  # noqa: E402
from harness.kernels.direct import default_plan  # noqa: E402
from harness.machine.blas import blas_summary  # noqa: E402
from harness.machine.calibrate import calibration  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from harness.kernels.native import host_kernels  # noqa: E402
from harness.timing import PoolSettler, interleaved_medians, measure  # noqa: E402
from harness.sweep.tuning import tuned_plan  # noqa: E402
from harness.conv.verify import verify  # noqa: E402
from harness.conv.weights import PATTERNS  # noqa: E402
from problems import alexnet_problems, run_bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", default="1", help="thread counts, e.g. 1,2 (timed interleaved)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--layers", default="conv2,conv3,conv4,conv5")
    ap.add_argument("--pattern", default="random", choices=PATTERNS,
                    help="weight pattern: unstructured (random, magnitude) or block:2/block:4")
    ap.add_argument("--tune", choices=["search", "cached", "off"], default="search")
    args = ap.parse_args()

    methods = [m for m in ("direct_sparse", "onednn", "onnxruntime", "dense_gemm",
                           "lowered_sparse", "lowered_scipy") if m in kernels.available_methods()]
    thread_counts = [int(t) for t in args.threads.split(",")]
    problems = alexnet_problems(args.layers, args.sparsity, args.batch, args.pattern)  # checked before timing
    host, built = detect_host(), host_kernels()
    peak = {t: calibration(built, host, t)["fma_gflops_all"]["median"] for t in thread_counts}
    print(f"host: {host.cpu_model}, {host.physical_cores} cores; BLAS: {blas_summary()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"sparsity {args.sparsity} ({args.pattern}), batch {args.batch}, threads {args.threads}, "
          f"median of {args.rounds} interleaved rounds; direct plans: {args.tune}; calibrated "
          "peak " + ", ".join(f"{peak[t]:.1f} GFLOP/s on {t}" for t in thread_counts))
    lines = {t: [] for t in thread_counts}
    ratios = {t: {m: [] for m in methods[1:]} for t in thread_counts}
    share = {t: [] for t in thread_counts}
    direct_times = []
    sources = {}  # (layer, threads) -> where the direct kernel's plan came from
    for layer, spec, w, x, expected in problems:
        prepared = {}
        for t in thread_counts:
            # off: the default plan; else the tuned one, or none, which leaves the choice to
            # prepare() as a user's call gets it (the model's plan, else the default)
            plan = default_plan(spec, built, t, w) if args.tune == "off" else tuned_plan(
                w, spec, t, built, host=host.cpu_model, search=args.tune == "search",
                l2_bytes=host.caches_kib.get("l2", 256) * 1024)
            for m in methods:
                k = prepared[m, t] = kernels.prepare(
                    w, input_shape=spec.input_shape, stride=spec.stride, padding=spec.padding,
                    groups=spec.groups, method=m, threads=t,
                    **({"plan": plan} if m == "direct_sparse" and plan else {}))
                verdict = verify(k(x), expected)
                assert verdict.ok, f"{m} wrong on {layer.name}: {verdict}"
                if m == "direct_sparse":
                    sources[layer.name, t] = (k.describe()["plan_source"] if not plan else
                                              "default" if args.tune == "off" else "tuned")
        out = np.empty(spec.output_shape, np.float32)  # reused, as an inference engine would
        settle = PoolSettler()

        def time_once(key):  # every method and thread count in each round
            settle(*key)
            return measure(lambda: prepared[key](x, out=out), repeats=3, min_time=0.05).median
        time = interleaved_medians(prepared, time_once, args.rounds)
        useful = 2 * np.count_nonzero(w) * spec.out_height * spec.out_width * args.batch
        for t in thread_counts:
            direct = time["direct_sparse", t]
            gflops = useful / direct / 1e9
            share[t].append(gflops / peak[t])
            lines[t].append(f"{layer.name:6} " + " ".join(f"{time[m, t] * 1e3:17.3f}" for m in methods)
                            + f"  {gflops:11.1f} {100 * gflops / peak[t]:6.1f}%  "
                            + " ".join(f"{time[m, t] / direct:18.2f}" for m in methods[1:]))
            for m in methods[1:]:
                ratios[t][m].append(time[m, t] / direct)
        direct_times.append([time["direct_sparse", t] for t in thread_counts])
    header = f"{'layer':6} " + " ".join(f"{m + ' ms':>17}" for m in methods) + \
        "  direct GF/s % peak  " + " ".join(f"{'x vs ' + m:>18}" for m in methods[1:])
    for t in thread_counts:
        print(f"\n{t} thread(s)\n{header}\n" + "\n".join(lines[t]))
        print(f"geometric means: {100 * geomean(share[t]):.1f}% of the calibrated peak; "
              "direct_sparse " + ", ".join(f"{geomean(r):.2f}x vs {m}" for m, r in ratios[t].items()))
    print("direct plans: " + ", ".join(f"{name} ({t} thread(s)) {source}"
                                       for (name, t), source in sources.items()))
    if len(thread_counts) > 1:
        times = np.array(direct_times)
        for j, t in enumerate(thread_counts[1:], start=1):
            scale = times[:, 0] / times[:, j]
            print(f"direct_sparse {t} vs {thread_counts[0]} thread(s): " + ", ".join(
                f"{s:.2f}x" for s in scale) + f" (geometric mean {geomean(scale):.2f}x)")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
