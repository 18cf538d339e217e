"""Weights for sweep points: generated patterns (seeded and reproducible) or loaded from files."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.conv.layers import LayerShape
from harness.conv.sparsity import (block_pruned_weights, magnitude_pruned_weights,
                                   random_sparse_weights)

# random: zeros at uniformly random places; magnitude: the smallest weights zeroed;
# block:G: magnitude-pruned in blocks of G consecutive output channels sharing one support
PATTERNS = ("random", "magnitude", "block:2", "block:4")


def block_group(pattern: str) -> int:
    """The output channels per block of a pattern (1 for the unstructured ones)."""
    return int(pattern.split(":")[1]) if pattern.startswith("block:") else 1


def group_pattern(group: int) -> str:
    """The pattern of weights whose support is shared by blocks of ``group`` output channels
    (what a plan's out_group above 1 is chosen for), "random" for a group of one: block_group's
    inverse."""
    return f"block:{group}" if group > 1 else "random"


def is_block(pattern: str) -> bool:
    """Whether rows of this pattern hold a block structure (they are not what the models of
    unstructured sparsity are fitted to)."""
    return block_group(pattern) > 1


def check_pattern(pattern: str) -> str:
    if pattern not in PATTERNS:
        raise HarnessError(f"unknown weight pattern {pattern!r} (known: {', '.join(PATTERNS)})")
    return pattern


def stable_seed(*parts) -> int:
    """A seed derived from the parts' text: the same in every process (unlike hash())."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def generated_weights(layer: LayerShape, sparsity: float, pattern: str, seed: int) -> np.ndarray:
    shape = layer.spec(1).weight_shape
    rng = np.random.default_rng(stable_seed(seed, layer.key, f"{sparsity:.6f}", pattern))
    if pattern == "random":
        return random_sparse_weights(shape, sparsity, rng)
    if pattern == "magnitude":
        return magnitude_pruned_weights(shape, sparsity, rng)
    return block_pruned_weights(shape, sparsity, rng, block_group(check_pattern(pattern)))


def sweep_input(layer: LayerShape, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(stable_seed(seed, layer.key, batch, "input"))
    return rng.standard_normal(layer.spec(batch).input_shape).astype(np.float32)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise HarnessError(f"{path}: weight file not found")
    if path.suffix in (".pt", ".pth"):
        try:
            import torch
        except ImportError:
            raise HarnessError(f"{path}: reading a PyTorch state dict needs PyTorch: "
                               "pip install 'sparseconv-harness[torch]'") from None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise HarnessError(f"{path}: not a readable PyTorch state dict "
                               f"({str(exc).splitlines()[0]})") from None
        if not isinstance(state, dict):
            raise HarnessError(f"{path}: expected a state dict (a mapping of tensors)")
        return {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "detach")}
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("a single array, not an archive of named arrays")
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise HarnessError(f"{path}: not a readable .npz file ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else 'damaged'})") from None


def load_weight_file(path: str | Path, layers: list[LayerShape]) -> dict[str, np.ndarray]:
    """Weights from a ``.npz`` or a PyTorch state dict (``.pt``/``.pth``) whose arrays are
    named by layer (``conv2``, ``alexnet/conv2`` or ``conv2.weight``); each is checked
    against the layer's weight shape."""
    path = Path(path)
    arrays = _read_arrays(path)
    found = {}
    for layer in layers:
        names = [n for n in (layer.key, layer.name, f"{layer.name}.weight") if n in arrays]
        if not names:
            continue
        name = names[0]
        w = arrays[name]
        expected = layer.spec(1).weight_shape
        if w.shape != expected:
            raise HarnessError(f"{path}: '{name}' has shape {w.shape}, layer {layer.key} "
                               f"needs {expected}")
        if not np.issubdtype(w.dtype, np.floating):
            raise HarnessError(f"{path}: '{name}' has dtype {w.dtype}, expected floating point")
        if not np.isfinite(w).all():
            raise HarnessError(f"{path}: '{name}' contains NaN or Inf")
        found[layer.key] = w.astype(np.float32)
    if not found:
        raise HarnessError(f"{path}: no array named after any of the sweep's layers "
                           f"({', '.join(l.name for l in layers)})")
    return found
