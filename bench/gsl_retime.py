#!/usr/bin/env python3
"""A finished GSL run's pruned convolutions timed again on this machine and these kernels,
as the run's own timing stage times them (one verified sweep over every seed's guided and
unguided weights and every dense method; the convolutions' speedup over the best dense
library, each layer deployed on the faster of the two), beside the speedups the run
recorded. For a kernel change or another machine, without training again. Needs PyTorch.
Usage:
    python bench/gsl_retime.py RUN_DIR [--repeats 5] [--out DIR]
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from harness.errors import HarnessError  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from harness.machine.profiles import HOST_PROFILE, load_profile  # noqa: E402
from problems import run_bench  # noqa: E402

STAGES = ("gsl", "unguided")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a GSL run directory (it holds summary.json)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="where the sweep goes (default: a temporary "
                    "directory)")
    args = ap.parse_args()
    run = Path(args.run)
    try:
        summary = json.loads((run / "summary.json").read_text())
        net = summary["network"]
    except (OSError, ValueError, KeyError) as exc:
        raise HarnessError(f"{run} is not a finished GSL run: {exc}") from None
    import torch
    from harness.gsl.measure import network_speed, time_patterns
    from harness.gsl.network import build_network, conv_shapes
    model = build_network(net["network"], net["classes"], net["width"], net["channels"])
    shapes = conv_shapes(model, torch.zeros(1, net["channels"], net["height"], net["height"]),
                         network="gsl")
    recorded, weights = {}, {}
    for result in summary["runs"]:
        for stage in STAGES:
            if stage not in result:
                continue
            variant = f"{stage}-s{result['seed']}"
            with np.load(run / f"seed-{result['seed']}" / f"pruned_convs_{stage}.npz") as z:
                by_name = {shape.name: layer for layer, shape in shapes.items()}
                weights[variant] = {by_name[k]: z[k] for k in z.files if k in by_name}
            recorded[variant] = result[stage].get("conv_speedup_measured")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gsl-retime-"))
    print(f"host {detect_host().cpu_model}; {run}: {len(weights)} pruned networks "
          f"({net['network']}), sweep in {out}")
    timing = time_patterns(weights, shapes, load_profile(HOST_PROFILE), out, args.repeats)
    now = {}
    for variant in weights:
        table, now[variant] = network_speed(timing, variant)
        layers = " ".join(f"{r.layer} {r.sparsity:.3f}: {r.speedup:.2f}x"
                          for r in table.itertuples())
        before = recorded[variant]
        print(f"  {variant:14s} {now[variant]:.2f}x (recorded {before:.2f}x)  {layers}"
              if before is not None else f"  {variant:14s} {now[variant]:.2f}x  {layers}")
    for stage in STAGES:
        values = [s for v, s in now.items() if v.startswith(f"{stage}-")]
        if values:
            print(f"{stage}: convolution speedup {np.mean(values):.2f}x"
                  + (f" +- {np.std(values, ddof=1):.2f}" if len(values) > 1 else "")
                  + f" over {len(values)} seed(s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
