#!/usr/bin/env python3
"""The pointwise kernel's variants, side by side: its default (input channels in blocks whose
slice stays in L1, the last block's sums stored from registers straight to the output, the
non-zeros stored block-major, the input read in place where the rule of in_place_default
says), all input channels in one block, the earlier kernel (one block, each output row
accumulated in a scratch row and copied out), the default with every chunk packed and with
every chunk read in place (at stride 1), the default with the earlier work items (output
channels split until every thread has four items), and the default with the earlier storage
(the non-zeros row by row).

For every 1x1 layer without padding of a catalog network (or of a GSL network for 28x28
images, such as gsl-bottleneck; that needs PyTorch) at one sparsity (random weights, batch 1,
one thread by default), each variant is verified against the float64 reference, then they are
timed in interleaved rounds; printed per layer: the medians, each other variant's time over
the default's, and the useful GFLOP/s of the default. Usage:
    python bench/pointwise_store.py [--network resnet50|gsl-bottleneck] [--sparsity 0.9]
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from harness import kernels  # noqa: E402
from harness.conv.verify import expected_output  # noqa: E402
from harness.conv.weights import generated_weights, sweep_input  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.kernels.pointwise import is_pointwise  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from problems import layer_bench_args, layers_of, run_bench, verified_medians  # noqa: E402

VARIANTS = {  # name -> the kernel's options ({}: its defaults)
    "default": {},
    "one block": {"channel_block": 1 << 30, "through_scratch": False},
    "earlier": {"channel_block": 1 << 30, "through_scratch": True},
    "row-major": {"row_major": True},
    "packed": {"in_place": False},
    "in place": {"in_place": True},  # at stride 1 only: strided layers pack (gather) always
}
ITEMS_A_THREAD = 4  # the earlier rule of default_out_block
EARLIER_ITEMS = "earlier items"


def earlier_items(spec, threads: int, kernel) -> dict:
    """Options of ``kernel`` (the default) with the earlier rule's output-channel block."""
    items = spec.batch * -(-spec.out_pixels // kernel.chunk)
    want = ITEMS_A_THREAD * threads
    block = kernel.out_block
    if items < want:
        block = min(block, max(1, -(-spec.out_channels // -(-want // items))))
    return {"out_block": block}


def main() -> int:
    args = layer_bench_args(__doc__, "resnet50", 0.9)
    layers = [l for l in layers_of(args.network) if is_pointwise(l.spec(args.batch))]
    if not layers:
        raise HarnessError(f"{args.network} has no 1x1 layers without padding")
    host = detect_host()
    print(f"host {host.cpu_model}; {args.network} 1x1 layers at sparsity {args.sparsity}, "
          f"batch {args.batch}, {args.threads} thread(s), medians of {args.rounds} rounds")
    totals = dict.fromkeys([*VARIANTS, EARLIER_ITEMS], 0.0)
    for layer in layers:
        spec = layer.spec(args.batch)
        w = generated_weights(layer, args.sparsity, "random", seed=0)
        x = sweep_input(layer, args.batch, seed=0)
        expected = expected_output(x, w, None, spec, relu=True)

        def prepare(options):
            if spec.stride != (1, 1):
                options = {**options, "in_place": False}
            return kernels.prepare(w, input_shape=x.shape, relu=True, method="pointwise_sparse",
                                   stride=spec.stride, threads=args.threads, **options)
        prepared = {name: prepare(options) for name, options in VARIANTS.items()}
        prepared[EARLIER_ITEMS] = prepare(earlier_items(spec, args.threads, prepared["default"]))
        t = verified_medians(prepared, x, expected, layer.name, args.rounds)
        for name in totals:
            totals[name] += t[name]
        useful = 2.0 * np.count_nonzero(w) * spec.out_height * spec.out_width * args.batch
        times = "  ".join(f"{name} {t[name] * 1e6:7.1f} us" for name in totals)
        print(f"  {layer.name:22s} {spec.in_channels:4d}->{spec.out_channels:<4d} "
              f"{spec.height:2d}x{spec.width:<2d} {times}  {over_default(t)} "
              f"({useful / t['default'] / 1e9:.1f} useful GFLOP/s)")
    times = ", ".join(f"{name} {totals[name] * 1e3:.3f} ms" for name in totals)
    print(f"all {len(layers)} layers once: {times}; over default: {over_default(totals)}")
    return 0


def over_default(times: dict) -> str:
    """Every other variant's time over the default's."""
    return ", ".join(f"{name} {t / times['default']:.2f}x" for name, t in times.items()
                     if name != "default")


if __name__ == "__main__":
    sys.exit(run_bench(main))
