#!/usr/bin/env python3
"""Thread scaling: tuned direct sparse against the dense baselines at 1..N threads.

Runs the sweep (verified, shuffled, plans tuned per thread count) on AlexNet conv2-5 at one
sparsity, then prints per batch: every method's median time, direct sparse's speedup over
itself on the fewest threads, and its ratio to the best dense baseline at the same thread count.
    python bench/scaling.py --threads 1,2,4,8,16 --batch 1,16
Rerunning with the same --out resumes the run (a finished one is only reprinted).
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

from harness import kernels  # noqa: E402
from harness.cli.sweep import main as sweep  # noqa: E402
from problems import run_bench  # noqa: E402

DENSE = [m for m in kernels.methods_where(dense=True) if kernels.METHODS[m].available()]


def print_scaling(frame: pd.DataFrame) -> None:
    ok = frame[frame["status"] == "ok"]
    for batch, g in ok.groupby("batch"):
        times = g.pivot_table(index="layer", columns=["method", "threads"], values="median_s")
        direct = times["direct_sparse"]
        dense = [times[m] for m in DENSE if m in times]
        print(f"\nbatch {batch}: median ms")
        print((times * 1e3).round(3).to_string())
        print(f"\nbatch {batch}: direct sparse, speedup over its own time on "
              f"{direct.columns[0]} thread(s)")
        print((direct.iloc[:, [0]].to_numpy() / direct).round(2).to_string())
        if dense:
            best = np.minimum.reduce([d.to_numpy() for d in dense])
            print(f"\nbatch {batch}: direct sparse, x faster than the best dense baseline")
            print((pd.DataFrame(best, index=direct.index, columns=direct.columns) / direct)
                  .round(2).to_string())
    noisy = int(ok["noisy"].astype(bool).sum()) if "noisy" in ok else 0
    print(f"\n{noisy} of {len(ok)} points had an IQR above 10% of their median")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="conv2,conv3,conv4,conv5")
    ap.add_argument("--sparsity", default="0.9")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--threads", default=",".join(str(t) for t in (1, 2, 4, 8, 16)
                                                  if t <= (os.cpu_count() or 1)))
    ap.add_argument("--tune-budget", default="24")
    ap.add_argument("--out", default=str(ROOT / "results" / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = ap.parse_args()
    out = Path(args.out)
    argv = ["--network", "alexnet", "--layers", args.layers, "--sparsity", args.sparsity,
            "--methods", "direct_sparse," + ",".join(DENSE), "--batch", args.batch,
            "--threads", args.threads, "--tune", "search", "--tune-budget", args.tune_budget,
            "--no-fit", "--out", str(out)]
    if out.exists():
        argv.append("--resume")
    print(f"load average at start {os.getloadavg()[0]:.2f}")
    if sweep(argv) != 0:
        return 1
    print_scaling(pd.read_csv(out / "results.csv"))
    print(f"load average at end {os.getloadavg()[0]:.2f}; results under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
