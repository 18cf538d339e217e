"""Command line of run_gsl.py: train, prune with guidance, fine-tune, time the result."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.cli import common
from harness.errors import HarnessError
from harness.store.files import writable_dir


def build_parser(prog: str = "run_gsl.py") -> argparse.ArgumentParser:
    from harness.gsl.settings import NETWORKS, PRECISIONS, GSLSettings, TrainSettings
    d, t = GSLSettings(), TrainSettings()
    p = common.ArgumentParser(prog=prog, formatter_class=common.HelpFormatter, description=(
        "Guided Sparsity Learning: train a network on Fashion-MNIST (or MNIST) to convergence, "
        "prune it to the performance model's per-layer sweet spots, fine-tune, compare with "
        "uniform pruning and with the dense model of the same training budget over several "
        "seeds, and time the pruned convolutions with the sweep."))
    common.add_profile(p)
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist", "synthetic"],
                   help="training data (synthetic: generated, for smoke runs)")
    p.add_argument("--data", default=None, help="directory holding the idx files")
    p.add_argument("--train-subset", type=common.number("--train-subset", low=2, integer=True),
                   default=None, help="use the first N training images")
    p.add_argument("--validation", type=common.number("--validation", low=1, integer=True),
                   default=None, help="training images held out for model selection and "
                   f"early stopping (the test set is only reported); default {d.validation}, or "
                   "a twelfth of the training images if fewer")
    p.add_argument("--network", choices=sorted(NETWORKS), default="reference",
                   help="reference: VGG-style 3x3 convolutions; bottleneck: ResNet-style 1x1, "
                        "strided and 3x3 convolutions with differing sweet spots")
    p.add_argument("--seeds", type=common.number("--seeds", low=1, high=100, integer=True),
                   default=d.seeds, help="independent trainings; accuracies are reported as "
                   "mean and standard deviation over them")
    p.add_argument("--seed", type=common.number("--seed", low=0, integer=True), default=d.seed,
                   help="the first seed")
    p.add_argument("--width", type=common.number("--width", low=1, high=4096, integer=True),
                   default=32, help="channels of the first convolutions")
    p.add_argument("--checkpoint", default=None, help="dense weights (.pt) instead of training")
    p.add_argument("--method", choices=["gmp", "l1", "dns"], default="gmp",
                   help="gmp: gradual magnitude pruning on a cubic schedule; l1: L1 "
                        "regularisation with hard thresholding; dns: dynamic network surgery")
    p.add_argument("--pattern", choices=["magnitude", "block:2", "block:4"], default="magnitude",
                   help="how the convolutions are pruned: weight by weight, or in blocks of 2 "
                        "or 4 output channels that share one support (faster kernels)")
    p.add_argument("--dense-epochs", type=common.number("--dense-epochs", low=0, high=1000,
                                                        integer=True), default=d.dense_epochs,
                   help="most epochs of dense training (early stopping may end it sooner)")
    p.add_argument("--prune-epochs", type=common.number("--prune-epochs", low=1, high=1000,
                                                        integer=True), default=d.prune_epochs,
                   help="epochs of guided pruning (on a rewound learning rate)")
    p.add_argument("--finetune-epochs", type=common.number("--finetune-epochs", low=0,
                                                           high=1000, integer=True), default=d.finetune_epochs,
                   help="epochs of fine-tuning with fixed masks")
    p.add_argument("--lr", type=common.number("--lr", low=0, high=10, open_low=True),
                   default=t.lr, help="peak learning rate of dense training")
    p.add_argument("--rewind", type=common.number("--rewind", low=0, high=1, open_low=True),
                   default=t.rewind, help="pruning and fine-tuning restart the learning rate "
                   "at this share of the peak, then anneal it to zero")
    p.add_argument("--distill", type=common.number("--distill", low=0, high=1), default=t.distill,
                   help="after dense training (pruning, fine-tuning and the dense model of the "
                   "same budget alike): the weight of the dense model's soft targets in the "
                   "loss (knowledge distillation); 0: labels only")
    p.add_argument("--precision", choices=PRECISIONS, default=t.precision,
                   help="training's forward passes: bf16 (bfloat16; weights, gradients and "
                        "updates stay float32), fp32, or auto: bf16 where the CPU computes it "
                        "natively (AVX512_BF16 or AMX), else fp32. Evaluation is float32")
    p.add_argument("--augment", action="store_true",
                   help="train on random flips and shifts of up to 2 pixels (pays only with "
                        "more epochs than the default)")
    p.add_argument("--max-target", type=common.number("--max-target", low=0, high=0.999,
                                                      open_low=True), default=d.max_target,
                   help="cap on each layer's sweet-spot target (with --allocation time, the "
                   "weights these targets leave are then re-spread, each layer within its "
                   "sweet spot)")
    p.add_argument("--layer-cap", type=common.number("--layer-cap", low=0, high=0.999,
                                                     open_low=True), default=d.layer_cap,
                   help="with --allocation time, the highest sparsity the re-spreading gives "
                        "any layer")
    p.add_argument("--allocation", choices=["time", "sweet-spot"], default="time",
                   help="time: keep the weights the sweet-spot targets leave, in the layers where "
                   "they cost the least predicted time (default); sweet-spot: each layer at its "
                   "own target")
    p.add_argument("--no-compare", action="store_true", help="skip the unguided comparison")
    p.add_argument("--no-dense-same-budget", action="store_true",
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
    from dataclasses import replace

    from harness.conv.weights import block_group
    from harness.gsl.datasets import load_idx_dataset, synthetic_dataset
    from harness.gsl.pipeline import run_gsl
    from harness.gsl.settings import GSLSettings, PruneSettings, TrainSettings
    from harness.gsl.training import resolve_precision

    profile, _, _ = common.load_target(args)  # refuses an ISA the host lacks before training
    if args.dataset == "synthetic":
        data = synthetic_dataset(n_train=2000, n_test=500, size=28, classes=10)
    else:
        data = load_idx_dataset(args.dataset, args.data)
    if args.train_subset:
        data = replace(data, train_x=data.train_x[:args.train_subset],
                       train_y=data.train_y[:args.train_subset])
    if args.validation is None:
        args.validation = max(1, min(GSLSettings.validation, len(data.train_x) // 12))
    if args.validation >= len(data.train_x):
        raise HarnessError(f"--validation {args.validation}: needs more than {args.validation} "
                           f"training images (there are {len(data.train_x)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path("results") / f"gsl-{time.strftime('%Y%m%d-%H%M%S')}"
    writable_dir(out, "the GSL run")  # before hours of training, not after
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None and not checkpoint.exists():
        raise HarnessError(f"{checkpoint}: checkpoint not found")
    spec = {"network": args.network, "classes": data.classes, "width": args.width,
            "channels": data.train_x.shape[1], "height": data.train_x.shape[2]}
    settings = GSLSettings(
        dense_epochs=args.dense_epochs, prune_epochs=args.prune_epochs,
        finetune_epochs=args.finetune_epochs, seeds=args.seeds, seed=args.seed,
        validation=args.validation, max_target=args.max_target, layer_cap=args.layer_cap,
        allocation=args.allocation,
        compare_unguided=not args.no_compare, dense_same_budget=not args.no_dense_same_budget)
    train = TrainSettings(lr=args.lr, rewind=args.rewind, augment=args.augment,
                          distill=args.distill,
                          precision=resolve_precision(args.precision))
    summary = run_gsl(spec, data, profile, out, train=train, settings=settings,
                      checkpoint=checkpoint,
                      prune=PruneSettings(method=args.method, block=block_group(args.pattern)))
    print()
    for line in report_lines(summary):
        print(line)
    print(f"outputs in {out}")
    return 0


def report_lines(summary: dict) -> list[str]:
    """The run's numbers over its seeds, for the terminal."""
    from harness.gsl.summary import mean_std
    a = summary["aggregate"]
    n = len(summary["seeds"])
    lines = [f"test accuracy over {n} seed{'s' * (n > 1)} (mean ± standard deviation):",
             f"  dense, converged: {mean_std(a['dense_accuracy'])}%"]
    if "dense_same_budget_accuracy" in a:
        lines.append(f"  dense, trained as long as the pruned networks: "
                     f"{mean_std(a['dense_same_budget_accuracy'])}%")
    lines.append(f"  best dense of the same budget (chosen on validation): "
                 f"{mean_std(a['best_dense_accuracy'])}%")
    for stage, label in (("gsl", "GSL"), ("unguided", "unguided (uniform)")):
        if f"{stage}_accuracy" not in a:
            continue
        line = (f"  {label}: {mean_std(a[f'{stage}_accuracy'])}% "
                f"({mean_std(a[f'{stage}_points_below_best_dense'])} points below the best dense) "
                f"at convolution sparsity {mean_std(a[f'{stage}_conv_sparsity'], 3)}")
        if f"{stage}_conv_speedup" in a:
            line += f"; measured convolution speedup {mean_std(a[f'{stage}_conv_speedup'])}x"
        if f"{stage}_e2e_sparsified_ms" in a:
            line += f"; end to end {mean_std(a[f'{stage}_e2e_sparsified_ms'], 3)} ms"
            if f"{stage}_e2e_speedup_vs_torch" in a:
                line += f" ({mean_std(a[f'{stage}_e2e_speedup_vs_torch'])}x PyTorch)"
        lines.append(line)
    if "guided_over_unguided_conv_speed" in a:
        lines.append(f"guided over unguided: convolutions {mean_std(a['guided_over_unguided_conv_speed'])}x "
                     f"as fast, accuracy {mean_std(a['guided_minus_unguided_accuracy'])} points apart"
                     + (f", end to end {mean_std(a['guided_over_unguided_e2e_speed'])}x"
                        if "guided_over_unguided_e2e_speed" in a else ""))
    lines.append(f"pattern {summary['pattern']}; guidance from the {summary['model']}")
    return lines
