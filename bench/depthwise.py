#!/usr/bin/env python3
"""MobileNetV2's depthwise layers (dense 3x3, one channel a group, ReLU6): the direct kernel
with the plan prepare() picks against ONNX Runtime and oneDNN, warm (the layer run again and
again) and cold (the caches flushed before each call, as inside a network, where the other
layers' data has pushed a layer's out).

Each distinct shape once, batch 1, interleaved rounds, medians (a cold sample times one
call, after the flush). Usage:
    python bench/depthwise.py [--threads 1] [--rounds 5]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from harness import kernels  # noqa: E402
from harness.conv.layers import distinct, mobilenetv2_convolutions  # noqa: E402
from harness.conv.verify import expected_output  # noqa: E402
from harness.kernels.base import RELU6  # noqa: E402
from harness.machine.blas import blas_summary  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from harness.timing import CacheEvictor, interleaved_medians, measure  # noqa: E402
from problems import run_bench, verified_medians  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    methods = [m for m in ("direct_sparse", "onnxruntime", "onednn")
               if m in kernels.available_methods()]
    host = detect_host()
    evict = CacheEvictor(max(host.caches_kib.values(), default=32 * 1024))
    print(f"host: {host.cpu_model}; BLAS: {blas_summary()}; threads {args.threads}; median of "
          f"{args.rounds} interleaved rounds; cold: caches flushed before each call")
    rng = np.random.default_rng(0)
    print(f"{'layer':26s} " + " ".join(f"{m + ' ' + s:>22s}" for s in ("warm", "cold")
                                       for m in methods))
    totals = {(m, s): 0.0 for m in methods for s in ("warm", "cold")}
    for layer in distinct([c for c in mobilenetv2_convolutions() if c.groups > 1]):
        spec = layer.spec(1)
        w = rng.standard_normal(spec.weight_shape).astype(np.float32)
        b = rng.standard_normal(spec.out_channels).astype(np.float32)
        x = rng.standard_normal(spec.input_shape).astype(np.float32)
        conv = dict(input_shape=spec.input_shape, stride=spec.stride, padding=spec.padding,
                    groups=spec.groups, relu=True, relu_max=RELU6, threads=args.threads)
        prepared = {m: kernels.prepare(w, b, method=m, **conv) for m in methods}
        expected = expected_output(x, w, b, spec, True, RELU6)
        warm = verified_medians(prepared, x, expected, layer.name, args.rounds)
        outs = {m: np.empty(spec.output_shape, np.float32) for m in methods}
        cold = interleaved_medians(methods, lambda m: measure(
            lambda: prepared[m].run_into(x, outs[m]), repeats=3, evict=evict).median,
            args.rounds)
        row = [warm[m] for m in methods] + [cold[m] for m in methods]
        for m in methods:
            totals[m, "warm"] += warm[m]
            totals[m, "cold"] += cold[m]
        print(f"{layer.name:26s} " + " ".join(f"{t * 1e3:20.3f}ms" for t in row))
    print(f"{'sum':26s} " + " ".join(f"{totals[m, s] * 1e3:20.3f}ms"
                                     for s in ("warm", "cold") for m in methods))
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
