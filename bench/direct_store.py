#!/usr/bin/env python3
"""The direct kernel's two ways to the output, side by side: its default (the last
input-channel block's register tiles write the output through a lane map that drops the junk
columns; with one block no accumulator run is set, stored or read) and the earlier kernel
(every output channel's sums set to the bias in a scratch run, accumulated there, then copied
out row by row).

For every layer of a network that runs on the direct kernel (a catalog network, or a GSL
network for 28x28 images: gsl-reference, gsl-bottleneck; that needs PyTorch), at one sparsity
(random weights, batch 1, one thread by default), both are verified against the float64
reference and timed in interleaved rounds with the same plan (the one prepare() chooses);
printed per layer: the medians and the earlier kernel's time over the default's. Usage:
    python bench/direct_store.py [--network gsl-reference] [--sparsity 0.95]
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from harness import kernels  # noqa: E402
from harness.conv.verify import expected_output  # noqa: E402
from harness.conv.weights import generated_weights, sweep_input  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from problems import layer_bench_args, layers_of, run_bench, verified_medians  # noqa: E402

VARIANTS = {"default": False, "earlier": True}  # name -> through_scratch


def main() -> int:
    args = layer_bench_args(__doc__, "gsl-reference", 0.95)
    layers = [l for l in layers_of(args.network)
              if kernels.sparse_method_for(l.spec(args.batch)) == "direct_sparse"]
    if not layers:
        raise HarnessError(f"{args.network} has no layers the direct kernel runs")
    print(f"host {detect_host().cpu_model}; {args.network} layers on the direct kernel at "
          f"sparsity {args.sparsity}, batch {args.batch}, {args.threads} thread(s), medians of "
          f"{args.rounds} rounds")
    totals = dict.fromkeys(VARIANTS, 0.0)
    for layer in layers:
        spec = layer.spec(args.batch)
        w = generated_weights(layer, args.sparsity, "random", seed=0)
        x = sweep_input(layer, args.batch, seed=0)
        expected = expected_output(x, w, None, spec, relu=True)
        prepared = {name: kernels.prepare(w, input_shape=x.shape, relu=True, stride=spec.stride,
                                          padding=spec.padding, dilation=spec.dilation,
                                          groups=spec.groups, threads=args.threads,
                                          through_scratch=through)
                    for name, through in VARIANTS.items()}
        t = verified_medians(prepared, x, expected, layer.name, args.rounds)
        for name in totals:
            totals[name] += t[name]
        useful = 2.0 * np.count_nonzero(w) * spec.out_height * spec.out_width * args.batch
        times = "  ".join(f"{name} {t[name] * 1e6:8.1f} us" for name in VARIANTS)
        print(f"  {layer.name:18s} {spec.in_channels:4d}->{spec.out_channels:<4d} "
              f"{spec.height:3d}x{spec.width:<3d} k{spec.kernel_h} s{spec.stride[0]}  {times}  "
              f"earlier/default {t['earlier'] / t['default']:.2f}x "
              f"({useful / t['default'] / 1e9:.1f} useful GFLOP/s)")
    print(f"all {len(layers)} layers once: " + ", ".join(
        f"{name} {totals[name] * 1e3:.3f} ms" for name in VARIANTS)
        + f"; earlier over default {totals['earlier'] / totals['default']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
