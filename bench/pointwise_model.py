#!/usr/bin/env python3
"""The pointwise kernel's mechanistic model against the kernel: for each distinct stride-1 1x1
layer of a catalog network at each sparsity (random weights, batch 1, one thread by default),
the kernel with its default chunks and blocks is verified, timed, and priced from this build's
calibration (taken first if the cache lacks it). Printed per layer: measured and predicted
times, the error and the predicted parts; last, the median and worst |error|. Usage:
    python bench/pointwise_model.py [--network resnet50] [--sparsity 0.7,0.9] [--threads 1]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from harness import kernels  # noqa: E402
from harness.conv.layers import network_layers  # noqa: E402
from harness.conv.verify import expected_output  # noqa: E402
from harness.conv.weights import generated_weights, sweep_input  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.kernels.native import host_kernels  # noqa: E402
from harness.kernels.pointwise import is_pointwise  # noqa: E402
from harness.machine.calibrate import calibration  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from harness.models.mechanistic import KernelCosts  # noqa: E402
from harness.models.pointwise_model import pointwise_time  # noqa: E402
from problems import run_bench, sparsity_list, verified_medians  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="resnet50")
    ap.add_argument("--sparsity", default="0.7,0.9")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    sparsities = sparsity_list(args.sparsity)
    if args.threads < 1:
        raise HarnessError("--threads must be at least 1")
    host, built = detect_host(), host_kernels()
    costs = KernelCosts.from_calibration(calibration(built, host, args.threads))
    print(f"host {host.cpu_model}; {args.network} 1x1 layers at stride 1, batch 1, "
          f"{args.threads} thread(s)")
    errors, seen = [], set()
    for layer in network_layers(args.network):
        spec = layer.spec(1)
        shape = (spec.in_channels, spec.out_channels, spec.height, spec.width)
        if not is_pointwise(spec) or shape in seen:
            continue
        seen.add(shape)
        x = sweep_input(layer, 1, seed=0)
        for sparsity in sparsities:
            w = generated_weights(layer, sparsity, "random", seed=0)
            k = kernels.prepare(w, input_shape=x.shape, method="pointwise_sparse",
                                threads=args.threads, kernels=built)
            measured = verified_medians({"pointwise": k}, x,
                                        expected_output(x, w, None, spec, relu=False),
                                        layer.name, rounds=2)["pointwise"]
            predicted = pointwise_time(costs, spec, np.count_nonzero(w) / w.size, k.chunk,
                                       k.channel_block, k.out_block, args.threads,
                                       in_place=k.in_place)
            errors.append(predicted["total_s"] / measured - 1)
            parts = " ".join(f"{name[:-2]} {v * 1e6:.0f}" for name, v in predicted.items()
                             if name != "total_s")
            print(f"  {layer.name:22s} {spec.in_channels:4d}->{spec.out_channels:<4d} "
                  f"{spec.height:2d}x{spec.width:<2d} s={sparsity:.2f} measured "
                  f"{measured * 1e6:6.0f} us, predicted {predicted['total_s'] * 1e6:6.0f} us "
                  f"({errors[-1]:+.1%}; {parts})", flush=True)
    if not errors:
        raise HarnessError(f"{args.network} has no stride-1 1x1 layers")
    print(f"{len(errors)} points: median |error| {np.median(np.abs(errors)):.1%}, "
          f"worst {np.max(np.abs(errors)):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
