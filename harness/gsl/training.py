"""Training for the GSL stages: SGD with a learning-rate schedule, light augmentation, model
selection and early stopping on the validation split (never the test set), progress bars."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from harness.errors import HarnessError
from harness.gsl.datasets import ImageData
from harness.gsl.settings import PRECISIONS, TrainSettings
from harness.machine.hostinfo import detect_host

# CPU flags of native bfloat16 arithmetic (dot products into float32), which oneDNN uses for
# convolutions under autocast; without them bf16 is emulated and slower than float32
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_precision(precision: str) -> str:
    """The precision to train in on this host: "auto" is bf16 where the CPU computes bfloat16
    natively (the reference network trains 1.75-2x as fast as in float32 on an AMD EPYC,
    Zen 4), else fp32."""
    if precision not in PRECISIONS:
        raise HarnessError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if any(f in detect_host().features for f in BF16_FLAGS) else "fp32"


def augmented(x: torch.Tensor, rng: np.random.Generator, shift: int = 2) -> torch.Tensor:
    """A batch flipped left-right image by image and shifted by up to ``shift`` pixels (one
    shift per batch: zero padding, then a crop at a random offset)."""
    flip = torch.from_numpy(rng.random(len(x)) < 0.5)[:, None, None, None]
    x = torch.where(flip, x.flip(3), x)
    padded = nn.functional.pad(x, (shift,) * 4)
    dy, dx = rng.integers(0, 2 * shift + 1, 2)
    return padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


def batches(x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator):
    order = rng.permutation(len(x))
    for i in range(0, len(x), size):
        idx = order[i:i + size]
        yield torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 512) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        pred = model(torch.from_numpy(x[i:i + batch])).argmax(1).numpy()
        correct += int((pred == y[i:i + batch]).sum())
    model.train()
    return 100.0 * correct / max(1, len(x))


def schedule(opt, kind: str, peak: float, total: int):
    """``warmup``: one cycle (a short rise to the peak, then cosine to zero), for training from
    scratch; ``rewind``: cosine from the rewound rate to zero, for pruning and fine-tuning a
    trained model (learning-rate rewinding)."""
    if kind == "warmup":
        return torch.optim.lr_scheduler.OneCycleLR(opt, peak, total_steps=total, pct_start=0.15)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)  # from the rate opt starts at


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Kullback-Leibler divergence of the student's softened prediction from the teacher's,
    scaled by the squared temperature so that its gradients keep the labels' scale."""
    t = temperature
    return nn.functional.kl_div(nn.functional.log_softmax(logits.float() / t, 1),
                                nn.functional.log_softmax(teacher_logits.float() / t, 1),
                                reduction="batchmean", log_target=True) * (t * t)


def train_epochs(model: nn.Module, data: ImageData, epochs: int, settings: TrainSettings, *,
                 kind: str = "warmup", pruner=None, fixed_masks=None, prune_epochs: int = 0,
                 seed: int = 0, log=print, phase: str = "train",
                 history: list | None = None, teacher: nn.Module | None = None) -> dict:
    """SGD over at most ``epochs``. With ``pruner`` the model is pruned during the first
    ``prune_epochs`` (then ``pruner.finish()`` fixes the masks), with ``fixed_masks`` the masks
    are kept throughout; with ``teacher`` (and ``settings.distill`` > 0) the loss mixes in
    its soft targets. The weights kept at the end are those of the epoch with the best
    validation accuracy among those with final masks; training stops early once
    ``settings.patience`` such epochs pass without a better one. Returns the chosen epoch and
    its validation accuracy."""
    if epochs == 0:
        return {"epoch": 0, "val_accuracy": accuracy(model, data.val_x, data.val_y)}
    rng = np.random.default_rng(seed)
    peak = settings.lr * (settings.rewind if kind == "rewind" else 1.0)
    opt = torch.optim.SGD(model.parameters(), lr=peak, momentum=settings.momentum,
                          weight_decay=settings.weight_decay, nesterov=settings.momentum > 0)
    steps_per_epoch = math.ceil(len(data.train_x) / settings.batch_size)
    sched = schedule(opt, kind, peak, max(1, epochs * steps_per_epoch))
    loss_fn = nn.CrossEntropyLoss()
    bf16 = resolve_precision(settings.precision) == "bf16"
    if teacher is not None and settings.distill > 0:
        teacher = teacher.eval().to(memory_format=torch.channels_last)
    else:
        teacher = None
    masks = fixed_masks
    best = {"epoch": 0, "val_accuracy": -1.0}
    best_state = None
    step = 0
    model.to(memory_format=torch.channels_last)  # oneDNN trains about 15% faster so
    model.train()
    for epoch in range(1, epochs + 1):
        total, count = 0.0, 0
        bar = tqdm(batches(data.train_x, data.train_y, settings.batch_size, rng),
                   total=steps_per_epoch, desc=f"{phase} {epoch}/{epochs}", unit="batch",
                   leave=False, disable=None)
        for xb, yb in bar:
            if settings.augment:
                xb = augmented(xb, rng)
            xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(xb)
                loss = loss_fn(logits, yb)
                if teacher is not None:
                    with torch.no_grad():
                        soft = teacher(xb)
                    loss = ((1.0 - settings.distill) * loss + settings.distill
                            * distillation_loss(logits, soft, settings.temperature))
            pruning = pruner is not None and epoch <= prune_epochs
            if pruning:
                loss = loss + pruner.penalty()
            opt.zero_grad()
            loss.backward()
            if pruning:
                pruner.before_step()
            opt.step()
            sched.step()
            step += 1
            if pruning:
                pruner.after_step(step)
                if step % pruner.settings.reproject_every == 0:
                    for event in pruner.reproject(step):
                        log(f"  re-projection at step {step}: {event}")
            elif masks is not None:
                masks.apply_masks()
            total += float(loss.detach()) * len(xb)
            count += len(xb)
        if pruner is not None and epoch == min(prune_epochs, epochs):
            pruner.finish()
            masks = pruner
        val = accuracy(model, data.val_x, data.val_y)
        sp = masks.sparsities() if masks is not None else \
            pruner.sparsities() if pruner is not None else {}
        log(f"{phase} epoch {epoch}/{epochs}: loss {total / count:.4f}, validation accuracy "
            f"{val:.2f}%" + ("; sparsity " + ", ".join(f"{n} {v:.2f}" for n, v in sp.items())
                             if sp else ""))
        if history is not None:
            history.append({"phase": phase, "epoch": epoch, "loss": total / count,
                            "val_accuracy": val, **{f"sparsity:{n}": v for n, v in sp.items()}})
        if pruner is not None and epoch < prune_epochs:
            continue  # the masks are not final yet: nothing to select
        if val > best["val_accuracy"]:
            best = {"epoch": epoch, "val_accuracy": val}
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best["epoch"] >= settings.patience:
            log(f"{phase}: no better validation accuracy in {settings.patience} epochs, stopping")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)
    return best
