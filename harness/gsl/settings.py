"""The settings of a GSL run (no PyTorch needed to read them, so the command line can show
their defaults without it)."""

from __future__ import annotations

from dataclasses import dataclass

NETWORKS = ("reference", "bottleneck")  # the networks GSL trains (harness.gsl.network)
PRECISIONS = ("auto", "bf16", "fp32")  # of training's forward pass (harness.gsl.training)


@dataclass
class GSLSettings:
    dense_epochs: int = 5     # at most; early stopping on the validation split may end sooner
    prune_epochs: int = 2
    finetune_epochs: int = 3
    seeds: int = 3            # independent trainings, seed, seed+1, ...
    seed: int = 0
    validation: int = 5000    # training images held out for model selection
    max_target: float = 0.94  # cap on each layer's sweet-spot target: sets the weight budget
    #                           (0.92 kept 0.16 points more accuracy, but 4.0-4.3x, not 5x)
    layer_cap: float = 0.95   # allocation by time gives no layer more sparsity than this
    allocation: str = "time"  # "time": spend the remaining weights where they cost least time;
    #                           "sweet-spot": every layer at its own sweet-spot target
    compare_unguided: bool = True
    dense_same_budget: bool = True  # also train the dense model as long as the pruned one
    sweep_layers: bool = True  # fit the model on a sweep of the network's own layer shapes
    end_to_end: bool = True  # run the pruned network whole through harness.sparsify
    timing_repeats: int = 5
    e2e_min_time: float = 0.2  # seconds each end-to-end timing sample runs at least


@dataclass
class TrainSettings:
    lr: float = 0.05            # peak learning rate of dense training
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = False       # random horizontal flips and shifts of up to 2 pixels (they
                                # cost accuracy at the default budget of a few epochs)
    patience: int = 3           # epochs without a better validation accuracy before stopping
    rewind: float = 0.5         # pruning and fine-tuning restart at this share of the peak rate
    distill: float = 0.5        # after dense training: the weight of the dense model's soft
                                # targets in the loss (knowledge distillation), 0: labels only
    temperature: float = 4.0    # of the soft targets
    precision: str = "auto"     # "bf16": forward passes in bfloat16 (weights, gradients and
                                # updates stay float32); "auto": bf16 where the CPU computes it
                                # natively, else "fp32"


@dataclass
class PruneSettings:
    method: str = "gmp"         # "gmp" (magnitude only), "l1" (GESL) or "dns" (GDNS)
    l1_conv: float = 2e-5       # L1 strength on the convolutions being pruned (l1, dns)
    l1_fc: float = 2e-6         # weaker L1 on fully connected layers (pruned for size only)
    fc_target: float = 0.8      # size target of the fully connected layers
    threshold_cap: float = 2.5  # l1, dns: a threshold never exceeds this many initial weight
                                # std devs (the penalty is meant to do the pruning)
    reproject_every: int = 50   # steps between re-projections
    stall_window: int = 3       # re-projections without progress that count as a stall
    block: int = 1              # convolutions pruned in blocks of this many output channels
                                # sharing one support (the sweep's block:G patterns); 1: any
