#!/usr/bin/env python3
"""Benchmark suite: tuned direct sparse vs every baseline, side by side in one run.

Runs the sweep (verified, shuffled, tuned plans searched when missing) per network, then prints
for every layer, sparsity, batch and thread count: each method's time, its ratio to the best
dense library, useful GFLOP/s and percent of the calibrated FMA peak of the threads used.
Defaults follow the project's benchmark plan (AlexNet conv2-5, VGG-16 and ResNet-50 3x3
convolutions; 70-95% sparsity; batch 1 and 16; 1 and 2 threads), which takes hours on a
2-core machine; narrow it with the options, e.g.
    python bench/suite.py --networks alexnet --batch 1 --threads 1,2
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_PROC_BIND", "close")
os.environ.setdefault("OMP_PLACES", "cores")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import gmean  # noqa: E402

from harness.machine.calibrate import calibration  # noqa: E402
from harness.cli.sweep import main as sweep  # noqa: E402
from harness import kernels  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from harness.kernels.native import host_kernels  # noqa: E402
from problems import run_bench  # noqa: E402

DEFAULT_LAYERS = {"alexnet": "conv2,conv3,conv4,conv5", "vgg16": None, "resnet50": None}


def dense_methods() -> list[str]:
    """Every dense library available here (oneDNN, ONNX Runtime, SGEMM): the best is the
    baseline."""
    return [m for m in kernels.methods_where(dense=True) if kernels.METHODS[m].available()]


def print_table(frame: pd.DataFrame, peak_1: float, peak_all: float) -> None:
    ok = frame[frame["status"] == "ok"]
    for (net, layer, batch, threads), g in ok.groupby(["network", "layer", "batch", "threads"],
                                                      sort=False):
        dense = g[g["dense"] == True]  # noqa: E712
        if dense.empty:
            continue
        best = dense.loc[dense["median_s"].idxmin()]
        peak = peak_1 if threads == 1 else peak_all
        print(f"\n{net} {layer}  batch {batch}  {threads} thread(s)  best dense: "
              f"{best['method']} {best['median_s'] * 1e3:.3f} ms")
        print(f"  {'method':15} {'sparsity':>8} {'ms':>9} {'x best dense':>12} "
              f"{'useful GF/s':>11} {'% peak':>7}")
        for _, r in g.sort_values(["sparsity", "method"]).iterrows():
            useful = r["useful_gflops"] if r["method"] not in ("onednn", "dense_gemm") \
                else r["effective_gflops"]
            print(f"  {r['method']:15} {r['sparsity']:8.2f} {r['median_s'] * 1e3:9.3f} "
                  f"{best['median_s'] / r['median_s']:12.2f} {useful:11.1f} "
                  f"{100 * useful / peak:6.1f}%")


def headline(frame: pd.DataFrame, peak_1: float) -> None:
    d = frame[(frame["method"] == "direct_sparse") & (frame["status"] == "ok") &
              (frame["network"] == "alexnet") & (frame["batch"] == 1) & (frame["threads"] == 1)]
    at90 = d[np.isclose(d["target_sparsity"], 0.9)]
    if len(at90):
        pct = 100 * gmean(at90["useful_gflops"]) / peak_1
        ratio = gmean(at90["speedup"])
        print(f"\nAlexNet conv2-5, 90% sparsity, batch 1, 1 thread (geometric means): "
              f"{pct:.1f}% of calibrated peak, {ratio:.2f}x the best dense library")
    at70 = d[np.isclose(d["target_sparsity"], 0.7)]
    if len(at70):
        print("at 70% sparsity, speedup per layer: " + ", ".join(
            f"{r['layer']} {r['speedup']:.2f}x" for _, r in at70.iterrows()))
    t = frame[(frame["method"] == "direct_sparse") & (frame["status"] == "ok")]
    pivot = t.pivot_table(index=["network", "layer", "batch", "target_sparsity"],
                          columns="threads", values="median_s")
    if pivot.shape[1] >= 2:
        cols = sorted(pivot.columns)
        scale = (pivot[cols[0]] / pivot[cols[-1]]).dropna()
        print(f"thread scaling {cols[0]} -> {cols[-1]} threads (direct sparse): median "
              f"{scale.median():.2f}x, min {scale.min():.2f}x over {len(scale)} points")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default="alexnet,vgg16,resnet50")
    ap.add_argument("--sparsity", default="0.7,0.8,0.9,0.95")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", default="5")
    ap.add_argument("--tune-budget", default="40")
    ap.add_argument("--out", default=str(ROOT / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = ap.parse_args()

    host = detect_host()
    threads_all = max(int(t) for t in args.threads.split(","))
    cal = calibration(host_kernels(), host, threads_all)
    peak_1, peak_all = cal["fma_gflops_1"]["median"], cal["fma_gflops_all"]["median"]
    print(f"host {host.cpu_model}; calibrated FMA peak {peak_1:.1f} GFLOP/s (1 thread), "
          f"{peak_all:.1f} ({threads_all} threads); load average {os.getloadavg()[0]:.2f}")
    print(f"dense baselines: {', '.join(dense_methods())}")
    frames = []
    for net in args.networks.split(","):
        out = Path(args.out) / net
        argv = ["--network", net, "--sparsity", args.sparsity, "--batch", args.batch,
                "--threads", args.threads, "--repeats", args.repeats, "--tune", "search",
                "--tune-budget", args.tune_budget, "--out", str(out), "--no-fit",
                "--methods", ",".join(["direct_sparse", *dense_methods(), "lowered_sparse",
                                       "lowered_scipy"])]
        if DEFAULT_LAYERS.get(net):
            argv += ["--layers", DEFAULT_LAYERS[net]]
        if out.exists():
            argv.append("--resume")
        if sweep(argv) not in (0,):
            return 1
        frames.append(pd.read_csv(out / "results.csv"))
    frame = pd.concat(frames, ignore_index=True)
    print_table(frame, peak_1, peak_all)
    headline(frame, peak_1)
    print(f"load average at end {os.getloadavg()[0]:.2f}; results under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
