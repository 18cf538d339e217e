#!/usr/bin/env python3
"""The direct kernel's work items, side by side: the default output-channel block (every
channel of a conv group in one item, split only to give each thread an item) against the
earlier rule, which also capped an item's accumulators at 512 KiB so they would stay in L2.

For every layer of the catalog networks named where the two rules differ, at each sparsity
(random weights, batch 1, one thread by default), the plan prepare() runs by default is timed
as it is and with the capped block, everything else equal; both are verified against the
float64 reference and timed in interleaved rounds. Printed per layer: both medians and the
capped time over the default's; last, the geometric mean over all points. Usage:
    python bench/out_block.py [--networks resnet50,alexnet,vgg16] [--sparsity 0.5,0.9]
"""

import argparse
import os
import sys
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from harness import kernels  # noqa: E402
from harness.conv.layers import network_layers  # noqa: E402
from harness.conv.sparsity import direct_layout  # noqa: E402
from harness.conv.verify import expected_output  # noqa: E402
from harness.conv.weights import generated_weights, sweep_input  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from problems import run_bench, sparsity_list, verified_medians  # noqa: E402

CAPPED_ACC_BYTES = 512 * 1024  # the earlier rule's bound on one item's accumulators


def capped_block(spec, plan) -> int:
    """The earlier rule's block: the default's, cut so that its accumulators fit the cap."""
    run = spec.out_height * direct_layout(spec).plane_w
    block = max(1, min(plan.out_channel_block, CAPPED_ACC_BYTES // (4 * run)))
    return -(-block // plan.out_group) * plan.out_group


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default="resnet50,alexnet,vgg16")
    ap.add_argument("--sparsity", default="0.5,0.9")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sparsities = sparsity_list(args.sparsity)
    if args.threads < 1:
        raise HarnessError("--threads must be at least 1")
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    layers = [l for n in networks for l in network_layers(n)]
    print(f"host {detect_host().cpu_model}; {','.join(networks)}, batch 1, "
          f"{args.threads} thread(s), medians of {args.rounds} rounds")
    ratios = []
    for layer in layers:
        spec = layer.spec(1)
        x = sweep_input(layer, 1, seed=0)
        geometry = dict(input_shape=x.shape, stride=spec.stride, padding=spec.padding,
                        dilation=spec.dilation, groups=spec.groups, threads=args.threads)
        for sparsity in sparsities:
            w = generated_weights(layer, sparsity, "random", seed=0)
            default = kernels.prepare(w, **geometry)
            block = capped_block(spec, default.plan)
            if block == default.plan.out_channel_block:
                continue
            capped = kernels.prepare(w, **geometry,
                                     plan=replace(default.plan, out_channel_block=block))
            t = verified_medians({"default": default, "capped": capped}, x,
                                 expected_output(x, w, None, spec, relu=False), layer.name,
                                 args.rounds)
            ratios.append(t["capped"] / t["default"])
            print(f"  {layer.network:8s} {layer.name:22s} s={sparsity:.2f} block "
                  f"{default.plan.out_channel_block:4d} vs {block:4d}: "
                  f"{t['default'] * 1e6:8.1f} us vs {t['capped'] * 1e6:8.1f} us  "
                  f"{ratios[-1]:.2f}x", flush=True)
    if not ratios:
        print("the two rules agree on every layer named")
        return 0
    print(f"{len(ratios)} points: capped over default, geometric mean "
          f"{np.exp(np.mean(np.log(ratios))):.2f}x (min {min(ratios):.2f}, "
          f"max {max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
