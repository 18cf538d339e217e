"""Command line of run_gsl.py: train, prune with guidance, fine-tune, time the result."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.cli import common
from harness.errors import HarnessError
from harness.store.files import writable_dir


def build_parser(prog: str = "run_gsl.py") -> argparse.ArgumentParser:
    p = common.ArgumentParser(prog=prog, formatter_class=common.HelpFormatter, description=(
        "Guided Sparsity Learning: prune the reference network on Fashion-MNIST (or MNIST) to "
        "the performance model's per-layer sweet spots, fine-tune, and time the pruned "
        "convolutions with the sweep."))
    common.add_profile(p)
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist", "synthetic"],
                   help="training data (synthetic: generated, for smoke runs)")
    p.add_argument("--data", default=None, help="directory holding the idx files")
    p.add_argument("--train-subset", type=common.number("--train-subset", low=1, integer=True),
                   default=None, help="use the first N training images")
    p.add_argument("--width", type=common.number("--width", low=1, high=4096, integer=True),
                   default=32, help="channels of the first convolutions")
    p.add_argument("--checkpoint", default=None, help="dense weights (.pt) instead of training")
    p.add_argument("--method", choices=["l1", "dns"], default="l1",
                   help="l1: L1 regularisation with hard thresholding; dns: dynamic network "
                        "surgery")
    p.add_argument("--pattern", choices=["magnitude", "block:2", "block:4"], default="magnitude",
                   help="how the convolutions are pruned: weight by weight, or in blocks of 2 "
                        "or 4 output channels that share one support (faster kernels)")
    p.add_argument("--dense-epochs", type=common.number("--dense-epochs", low=0, high=1000,
                                                        integer=True), default=3,
                   help="epochs of dense training before pruning")
    p.add_argument("--prune-epochs", type=common.number("--prune-epochs", low=1, high=1000,
                                                        integer=True), default=4,
                   help="epochs of guided pruning")
    p.add_argument("--finetune-epochs", type=common.number("--finetune-epochs", low=0,
                                                           high=1000, integer=True), default=2,
                   help="epochs of fine-tuning with fixed masks")
    p.add_argument("--max-target", type=common.number("--max-target", low=0, high=0.999,
                                                      open_low=True), default=0.95,
                   help="highest sparsity any layer is pruned to")
    p.add_argument("--allocation", choices=["time", "sweet-spot"], default="time",
                   help="time: keep the weights the sweet-spot targets leave, in the layers where "
                   "they cost the least predicted time (default); sweet-spot: each layer at its "
                   "own target")
    p.add_argument("--no-compare", action="store_true", help="skip the unguided comparison")
    p.add_argument("--no-dense-same-epochs", action="store_true",
                   help="skip training the dense model as many extra epochs as pruning takes")
    p.add_argument("--threads", type=common.number("--threads", low=1, high=4096, integer=True),
                   default=None, help="PyTorch training threads")
    p.add_argument("--out", default=None, help="run directory (default results/gsl-<time>)")
    return p


def main(argv: list[str] | None = None, prog: str = "run_gsl.py") -> int:
    return common.run(_run, build_parser(prog).parse_args(argv))


def _run(args) -> int:
    try:
        import torch
    except ImportError:
        raise HarnessError("run_gsl.py needs PyTorch: pip install 'sparseconv-harness[torch]'") from None
    from harness.gsl.datasets import load_idx_dataset, synthetic_dataset
    from harness.gsl.network import ReferenceNet
    from harness.gsl.pipeline import GSLSettings, run_gsl
    from harness.gsl.pruning import PruneSettings
    from harness.conv.weights import block_group

    profile, _, _ = common.load_target(args)  # refuses an ISA the host lacks before training
    if args.dataset == "synthetic":
        data = synthetic_dataset(n_train=2000, n_test=500, size=28, classes=10)
    else:
        data = load_idx_dataset(args.dataset, args.data)
    if args.train_subset:
        from dataclasses import replace
        data = replace(data, train_x=data.train_x[:args.train_subset],
                       train_y=data.train_y[:args.train_subset])
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("results") / f"gsl-{time.strftime('%Y%m%d-%H%M%S')}"
    writable_dir(out, "the GSL run")  # before hours of training, not after
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None and not checkpoint.exists():
        raise HarnessError(f"{checkpoint}: checkpoint not found")
    model = ReferenceNet(classes=data.classes, width=args.width,
                         in_channels=data.train_x.shape[1])
    settings = GSLSettings(
        dense_epochs=args.dense_epochs, prune_epochs=args.prune_epochs,
        finetune_epochs=args.finetune_epochs, max_target=args.max_target,
        allocation=args.allocation, compare_unguided=not args.no_compare,
        dense_same_epochs=not args.no_dense_same_epochs)
    summary = run_gsl(model, data, profile, out, prune=PruneSettings(method=args.method, block=block_group(args.pattern)),
                      settings=settings, checkpoint=checkpoint)
    g = summary["gsl"]
    if "dense_accuracy_same_epochs" in summary:
        print(f"\ndense model trained as many epochs as the pruned one: "
              f"{summary['dense_accuracy_same_epochs']:.2f}%")
    print(f"\ndense accuracy {summary['dense_accuracy']:.2f}%; GSL: {g['accuracy_after_pruning']:.2f}% "
          f"after pruning, {g['accuracy_after_finetune']:.2f}% after fine-tuning; measured conv "
          f"speedup {g['conv_speedup_measured']:.2f}x; pattern {summary['pattern']}, "
          f"{g['accuracy_cost_points']:+.2f} points below dense")
    if "unguided" in summary:
        u = summary["unguided"]
        print(f"unguided (uniform {u['uniform_sparsity']:.3f}): {u['accuracy_after_finetune']:.2f}% "
              f"after fine-tuning; measured conv speedup {u['conv_speedup_measured']:.2f}x")
    for name in ("gsl", "unguided"):
        e2e = summary.get(name, {}).get("end_to_end")
        if e2e:
            versus = "".join(f", {e2e[f'speedup_vs_{r}']:.2f}x {label}"
                             for r, label in (("torch", e2e["torch_best"]),
                                              ("onnxruntime", "ONNX Runtime"))
                             if f"speedup_vs_{r}" in e2e)
            print(f"{name} end to end (batch 1, 1 thread): {e2e['sparsified_ms']:.3f} ms{versus}; "
                  f"test accuracy of the sparse execution {e2e['sparse_execution_accuracy']:.2f}%")
    print(f"outputs in {out}")
    return 0
