#!/usr/bin/env python3
"""What unpredictable counts of non-zeros cost a sparse kernel: the same layer at the same
density with every row's count in every channel block equal (the loop's end predictable)
against counts drawn at random (each position kept with the density's probability, as pruning
leaves them), side by side.

For a catalog layer of one group, the direct kernel runs with the plan prepare() chooses for
random weights (its channel block held for both), or the pointwise kernel (--pointwise, 1x1 layers at
stride 1, all input channels in one block); both weights are verified against the float64
reference and timed in interleaved rounds. Printed per density: the non-zeros per call, both
medians and random over equal. The mechanistic model charges a mispredicted loop end per
unpredictable count (harness.models.mechanistic). Usage:
    python bench/branch_counts.py --layer alexnet:conv3 [--sparsity 0.8,0.9,0.95] [--pointwise]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from harness import kernels  # noqa: E402
from harness.conv.layers import network_layers  # noqa: E402
from harness.conv.verify import expected_output  # noqa: E402
from harness.conv.weights import sweep_input  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.kernels.pointwise import is_pointwise  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from problems import run_bench, sparsity_list, verified_medians  # noqa: E402


def weights(shape, block: int, density: float, equal: bool, rng) -> np.ndarray:
    """Weights whose rows keep round(density x slots) positions of every channel block
    (``equal``), or each position with probability ``density``."""
    m, c = shape[:2]
    w = np.zeros(shape, np.float32)
    for row in range(m):
        for c0 in range(0, c, block):
            part = w[row, c0:c0 + block].reshape(-1)  # a view: w is contiguous
            if equal:
                keep = np.zeros(part.size, bool)
                keep[rng.choice(part.size, int(round(density * part.size)), replace=False)] = True
            else:
                keep = rng.random(part.size) < density
            part[:] = keep * rng.standard_normal(part.size)
    return w


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="alexnet:conv3", help="NETWORK:LAYER of the catalog")
    ap.add_argument("--sparsity", default="0.8,0.9,0.95")
    ap.add_argument("--pointwise", action="store_true", help="time the pointwise kernel")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sparsities = sparsity_list(args.sparsity)
    network, _, name = args.layer.partition(":")
    try:
        layer = next(l for l in network_layers(network) if l.name == name)
    except StopIteration:
        raise HarnessError(f"--layer: {network} has no layer {name!r}") from None
    spec = layer.spec(1)
    if spec.groups != 1:
        raise HarnessError(f"--layer: {args.layer} has {spec.groups} groups; take one of one")
    if args.pointwise and not is_pointwise(spec):
        raise HarnessError(f"--pointwise: {args.layer} is not a 1x1 layer at stride 1")
    x = sweep_input(layer, 1, seed=0)
    shape = spec.weight_shape
    geometry = dict(input_shape=x.shape, stride=spec.stride, padding=spec.padding,
                    dilation=spec.dilation, groups=spec.groups)
    print(f"host {detect_host().cpu_model}; {args.layer}, "
          f"{'pointwise' if args.pointwise else 'direct'} kernel, batch 1, one thread")
    rng = np.random.default_rng(0)
    for sparsity in sparsities:
        density = 1.0 - sparsity
        if args.pointwise:
            block = spec.in_channels
            options = dict(method="pointwise_sparse", channel_block=block)
        else:
            plan = kernels.prepare(weights(shape, shape[1], density, False, rng), **geometry).plan
            block = plan.channel_block
            options = dict(plan=plan)
        prepared, expected = {}, {}
        for label, equal in (("equal", True), ("random", False)):
            w = weights(shape, block, density, equal, rng)
            prepared[label] = kernels.prepare(w, **geometry, **options)
            expected[label] = expected_output(x, w, None, spec, relu=False)
        t = verified_medians(prepared, x, expected, args.layer, args.rounds)
        per_call = density * block * spec.kernel_h * spec.kernel_w
        print(f"  s={sparsity:.2f}: {per_call:.1f} non-zeros per row and block; equal "
              f"{t['equal'] * 1e6:.1f} us, random {t['random'] * 1e6:.1f} us, random over "
              f"equal {t['random'] / t['equal']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
