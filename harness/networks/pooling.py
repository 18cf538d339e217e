"""Max pooling by the project's C kernel (kernels_c/pool.c) for the NCHW tensors that flow
between fused convolutions; PyTorch's NCHW max pooling is scalar code."""

from __future__ import annotations

import numpy as np
import torch
from torch import fx, nn

from harness.kernels import native


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def fast_poolable(pool: nn.MaxPool2d) -> bool:
    """Whether the C kernel computes this pool exactly as PyTorch does."""
    kernel, padding = _pair(pool.kernel_size), _pair(pool.padding)
    return (_pair(pool.dilation) == (1, 1) and not pool.ceil_mode and not pool.return_indices
            and all(2 * p <= k for p, k in zip(padding, kernel)))


class MaxPool(nn.Module):
    """nn.MaxPool2d (dilation 1, floor rounding) on 4-D float32 inputs; others go to PyTorch."""

    def __init__(self, pool: nn.MaxPool2d, threads: int, built):
        super().__init__()
        self.pool, self.threads, self.built = pool, threads, built
        self.kernel, self.padding = _pair(pool.kernel_size), _pair(pool.padding)
        self.stride = _pair(pool.stride or pool.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.dtype != torch.float32 or x.requires_grad:
            return self.pool(x)
        x = x.contiguous()
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh <= 0 or ow <= 0:
            return self.pool(x)
        out = np.empty((n, c, oh, ow), dtype=np.float32)
        built = self.built
        rc = built.lib.spconv_max_pool(native.float_ptr(built, x.numpy()), n * c, h, w, kh, kw,
                                       sh, sw, ph, pw, oh, ow, native.float_ptr(built, out),
                                       self.threads)
        native.check_rc(built, rc, "spconv_max_pool")
        return torch.from_numpy(out)


def replace_max_pools(graph: fx.GraphModule, threads: int, built) -> int:
    """Swap every exactly-computable nn.MaxPool2d of the graph for MaxPool; returns how many."""
    count = 0
    for node in graph.graph.nodes:
        if node.op != "call_module":
            continue
        module = graph.get_submodule(node.target)
        if isinstance(module, nn.MaxPool2d) and fast_poolable(module):
            name = f"fast_pool_{count}"
            graph.add_submodule(name, MaxPool(module, threads, built))
            node.target = name
            count += 1
    return count
