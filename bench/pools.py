#!/usr/bin/env python3
"""The pools a sparsified network runs in C (harness.networks.pooling) against PyTorch's: the
catalog networks' max pools (ResNet-50's stem pool, VGG-16's 2x2, GoogLeNet's 3x3 at stride
1) and ResNet-50's global average pool, warm, batch 1, both outputs compared first.

Interleaved rounds, medians. Usage:
    python bench/pools.py [--threads 1] [--rounds 7]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from harness.machine.build import host_kernels  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from harness.networks.pooling import GlobalAvgPool, MaxPool  # noqa: E402
from harness.networks.runtimes import torch_threads  # noqa: E402
from harness.timing import interleaved_medians, measure  # noqa: E402
from problems import run_bench  # noqa: E402

POOLS = {  # name: (PyTorch's pool, input shape)
    "resnet50 stem max 3/2/1": (nn.MaxPool2d(3, 2, 1), (1, 64, 112, 112)),
    "vgg16 max 2/2": (nn.MaxPool2d(2, 2), (1, 64, 224, 224)),
    "googlenet max 3/1/1": (nn.MaxPool2d(3, 1, 1), (1, 192, 28, 28)),
    "resnet50 global average": (nn.AdaptiveAvgPool2d(1), (1, 2048, 7, 7)),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    built = host_kernels()
    print(f"host: {detect_host().cpu_model}; build {built.key} ({built.isa}); threads "
          f"{args.threads}; median of {args.rounds} interleaved rounds")
    print(f"{'pool':26s} {'C us':>9s} {'PyTorch us':>11s} {'x PyTorch':>10s}")
    rng = np.random.default_rng(0)
    for name, (pool, shape) in POOLS.items():
        x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        ours = (MaxPool if isinstance(pool, nn.MaxPool2d) else GlobalAvgPool)(
            pool, args.threads, built)
        runs = {"C": lambda: ours(x), "PyTorch": lambda: pool(x)}
        with torch_threads(args.threads), torch.no_grad():
            assert torch.allclose(runs["C"](), runs["PyTorch"](), rtol=1e-5, atol=1e-6), name
            t = interleaved_medians(list(runs), lambda k: measure(
                runs[k], repeats=5, min_time=0.05).median, args.rounds)
        print(f"{name:26s} {t['C'] * 1e6:9.1f} {t['PyTorch'] * 1e6:11.1f} "
              f"{t['PyTorch'] / t['C']:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
