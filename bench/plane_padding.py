#!/usr/bin/env python3
"""The direct kernel with and without the row that pads its planes against L1 set aliasing.

A padded input plane of a 14x14 layer (3x3, padding 1) is 16 rows of 16 floats: a kilobyte,
so every plane of a channel block starts on the same quarter of the L1 sets, and a tile's
window of a few rows of each plane lands on a few sets only. `direct_layout` gives such planes
one row more. For every 3x3 layer of the chosen networks (one 13x13 control layer of AlexNet
is always among them), at each sparsity, this prepares the direct kernel with its default plan
(the model's, where the cache holds a calibration of the build) for the layout with the row
and for the layout without it, verifies both against the float64 reference, then times them
in interleaved rounds. Printed per layer: both medians and unpadded over padded. Usage:
    python bench/plane_padding.py [--profile xeon_e5_2697v4] [--sparsity 0.3,0.7,0.9]
"""

import argparse
import contextlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from scipy.stats import gmean  # noqa: E402

from harness import kernels  # noqa: E402
from harness.conv import sparsity as layouts  # noqa: E402
from harness.conv.layers import distinct, network_layers  # noqa: E402
from harness.conv.verify import expected_output  # noqa: E402
from harness.conv.weights import generated_weights, sweep_input  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.machine.build import build  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from harness.machine.isa import isa_table  # noqa: E402
from harness.machine.profiles import build_target, load_profile, profile_path  # noqa: E402
from problems import run_bench, sparsity_list, verified_medians  # noqa: E402

CONTROL = ("alexnet", "conv3")  # 15 rows of 16 floats: never padded


@contextlib.contextmanager
def unpadded_planes():
    """The layouts as they were before the padding row (for the comparison only)."""
    padded = layouts._unaliased_rows
    layouts._unaliased_rows = lambda rows, row_floats: rows
    try:
        yield
    finally:
        layouts._unaliased_rows = padded


def bench_layers(networks: list[str], lanes: int):
    """The distinct 3x3 layers of ``networks`` whose planes get the row in a build of
    ``lanes``-float vectors, and the control layer."""
    chosen = [l for l in network_layers(CONTROL[0]) if l.name == CONTROL[1]]
    for network in networks:
        for layer in distinct(network_layers(network)):
            spec = layer.spec(1)
            if (spec.kernel_h, spec.kernel_w) != (3, 3):
                continue
            rows = layouts.direct_layout(spec, True, lanes).plane_h
            with unpadded_planes():
                if layouts.direct_layout(spec, True, lanes).plane_h != rows:
                    chosen.append(layer)
    return chosen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="host")
    ap.add_argument("--networks", default="resnet50,vgg16")
    ap.add_argument("--sparsity", default="0.3,0.7,0.9")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.threads < 1 or args.rounds < 1:
        raise HarnessError("--threads and --rounds must be at least 1")
    sparsities = sparsity_list(args.sparsity)
    built = build(build_target(load_profile(profile_path(args.profile))))
    print(f"host {detect_host().cpu_model}; profile {args.profile} ({built.isa} build), "
          f"{args.threads} thread(s), batch 1, medians of {args.rounds} interleaved rounds")
    ratios = {}
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    for layer in bench_layers(networks, isa_table()[built.isa].lanes):
        spec = layer.spec(1)
        x = sweep_input(layer, 1, seed=0)
        for s in sparsities:
            w = generated_weights(layer, s, "random", seed=0)

            def prepare():
                return kernels.prepare(w, input_shape=x.shape, stride=spec.stride,
                                       padding=spec.padding, kernels=built,
                                       threads=args.threads)
            padded = prepare()
            with unpadded_planes():
                unpadded = prepare()
            t = verified_medians({"padded": padded, "unpadded": unpadded}, x,
                                 expected_output(x, w, None, spec, relu=False),
                                 f"{layer.network}/{layer.name}", args.rounds)
            ratios[(layer.network, layer.name, s)] = t["unpadded"] / t["padded"]
            print(f"  {layer.network:8s} {layer.name:16s} {spec.in_channels:4d}->"
                  f"{spec.out_channels:<4d} {spec.height:2d}x{spec.width:<2d} s{spec.stride[0]} "
                  f"sparsity {s:.2f}: padded {t['padded'] * 1e3:7.3f} ms, unpadded "
                  f"{t['unpadded'] * 1e3:7.3f} ms, unpadded/padded "
                  f"{ratios[(layer.network, layer.name, s)]:.2f}x", flush=True)
    padded_layers = [r for (net, name, _), r in ratios.items() if (net, name) != CONTROL]
    control = [r for (net, name, _), r in ratios.items() if (net, name) == CONTROL]
    print(f"geometric mean unpadded/padded: padded layers {gmean(padded_layers):.3f}x, "
          f"control {gmean(control):.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
