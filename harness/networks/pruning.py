"""Magnitude pruning of a PyTorch model's convolutions, per layer: one sparsity for all, or a
target per layer (a sweep's targets.yaml)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import nn

from harness.conv.sparsity import check_sparsity, magnitude_prune
from harness.errors import HarnessError


def is_pointwise(conv: nn.Conv2d) -> bool:
    return tuple(conv.kernel_size) == (1, 1) and conv.groups == 1


def prune_convolutions(model: nn.Module, sparsity: float | dict[str, float], *,
                       keep_first: bool = True, pointwise_only: bool = False) -> dict[str, float]:
    """Zero the smallest weights of each Conv2d in place: ``sparsity`` for every one, or a
    mapping from module name to sparsity (convolutions it does not name stay dense).
    ``keep_first`` leaves the first convolution (the stem, which reads the image) dense;
    ``pointwise_only`` prunes only 1x1 convolutions (MobileNet's depthwise ones stay dense).
    Returns the sparsity given to each pruned convolution."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if isinstance(sparsity, dict):
        unknown = sorted(set(sparsity) - {name for name, _ in convs})
        if unknown:
            raise HarnessError(f"pruning targets name no convolution of the model: {unknown[0]!r}")
        targets = {name: check_sparsity(float(s)) for name, s in sparsity.items()}
    else:
        level = check_sparsity(float(sparsity))
        targets = {name: level for i, (name, m) in enumerate(convs)
                   if (i or not keep_first) and (is_pointwise(m) or not pointwise_only)}
    modules = dict(convs)
    with torch.no_grad():
        for name, level in targets.items():
            w = modules[name].weight
            w.copy_(torch.from_numpy(magnitude_prune(w.detach().numpy(), level)))
    return targets


def read_targets(path: str | Path) -> dict[str, float]:
    """Per-layer sparsities from a sweep's targets.yaml (each layer marked ``prune`` gets its
    ``target_sparsity``, else its ``min_sparsity``) or from ``layers: {name: sparsity}``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"{path}: targets file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path}: not a YAML targets file ({str(exc).splitlines()[0]})") from None
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, dict) or not layers:
        raise HarnessError(f"{path}: expected a mapping 'layers' of layer name to sparsity")
    targets = {}
    for name, entry in layers.items():
        if isinstance(entry, dict):
            if not entry.get("prune"):
                continue
            value = entry.get("target_sparsity")
            value = entry.get("min_sparsity") if value is None else value
        else:
            value = entry
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise HarnessError(f"{path}: layer {name!r}: sparsity must be a number in [0, 1), "
                               f"got {value!r}")
        targets[str(name)] = float(value)
    return targets
