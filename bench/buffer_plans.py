#!/usr/bin/env python3
"""Whole networks with their layers' output buffers planned two ways, side by side: the
planner's own (a layer takes the free buffer freed last that holds its output, of any size)
and the earlier one (only a free buffer of the output's own size, the first freed).

The network (a catalog network, magnitude-pruned to one sparsity but its first convolution)
is sparsified twice from the same weights with every convolution on the sparse kernels, both
checked against PyTorch, and timed in interleaved rounds; printed: the buffers each plan
uses, the medians, and the earlier plan's time over the planner's. Usage:
    python bench/buffer_plans.py [--network resnet50] [--sparsity 0.9] [--threads 2] [--rounds 9]
"""

import argparse
import contextlib
import copy
import functools
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

import harness.networks.sparsify as sparsify_module  # noqa: E402
from harness.conv.sparsity import check_sparsity  # noqa: E402
from harness.machine.hostinfo import detect_host  # noqa: E402
from harness.networks.memory import share_buffers  # noqa: E402
from harness.networks.pruning import prune_convolutions  # noqa: E402
from harness.networks.sources import torch_model  # noqa: E402
from harness.timing import interleaved_medians, measure  # noqa: E402
from problems import run_bench  # noqa: E402

PLANS = {"planner": True, "earlier": False}  # name -> share_buffers' any_size


@contextlib.contextmanager
def planned(any_size: bool, counts: list):
    """sparsify() planning its buffers with ``any_size``, each plan's buffer count kept."""
    def plan(*args, **kwargs):
        counts.append(share_buffers(*args, **kwargs, any_size=any_size))
        return counts[-1]
    sparsify_module.share_buffers = plan
    try:
        yield
    finally:
        sparsify_module.share_buffers = share_buffers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="resnet50")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    check_sparsity(args.sparsity)
    name, model, example = torch_model(args.network)
    prune_convolutions(model, args.sparsity)
    with torch.no_grad():
        reference = model(example)
    networks, buffers = {}, {}
    for plan, any_size in PLANS.items():
        counts = []
        with planned(any_size, counts):
            networks[plan] = sparsify_module.sparsify(
                copy.deepcopy(model), example, threads=args.threads, choice="sparse")
        buffers[plan] = counts[-1]
        error = float((networks[plan](example) - reference).abs().max() / reference.abs().max())
        assert error < 1e-4, f"{plan}: relative error {error:.2e}"
    times = interleaved_medians(networks, lambda plan: measure(
        functools.partial(networks[plan], example), repeats=5, min_time=0.3).median, args.rounds)
    print(f"host {detect_host().cpu_model}; {name} at sparsity {args.sparsity}, "
          f"{args.threads} thread(s), medians of {args.rounds} interleaved rounds")
    for plan in PLANS:
        print(f"{plan:8} {buffers[plan]:3d} buffers  {times[plan] * 1e3:8.2f} ms")
    print(f"earlier / planner: {times['earlier'] / times['planner']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(run_bench(main))
