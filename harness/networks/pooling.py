"""Max pooling and global average pooling by the project's C kernels (kernels_c/pool.c) for
the NCHW tensors that flow between fused convolutions: PyTorch's NCHW max pooling is scalar
code, and its average pooling to 1x1 runs cold code after the fused layers."""

from __future__ import annotations

import torch
from torch import fx, nn

from harness.kernels import native
from harness.networks.memory import activation_buffer


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def fast_poolable(pool: nn.MaxPool2d) -> bool:
    """Whether the C kernel computes this pool exactly as PyTorch does."""
    kernel, padding = _pair(pool.kernel_size), _pair(pool.padding)
    return (_pair(pool.dilation) == (1, 1) and not pool.ceil_mode and not pool.return_indices
            and all(2 * p <= k for p, k in zip(padding, kernel)))


def runs_in_c(x: torch.Tensor) -> bool:
    """Whether the C kernels take this input (4-D float32, no autograd)."""
    return x.dim() == 4 and x.dtype == torch.float32 and not x.requires_grad


class PooledInC(nn.Module):
    """A pool run by a function of kernels_c/pool.c, (input, *geometry, output, threads), into
    an output buffer kept for each input shape: the network uses a pool's output within the
    call (SparseNetwork copies one it returns). A fresh array, and the conversions of both
    tensors to C pointers, cost 50-70 us a call inside ResNet-50 (its code cold), as much as
    the pooling itself; the input is passed by address."""

    function = ""

    def __init__(self, threads: int, built):
        super().__init__()
        self.threads, self.built = threads, built
        # per output shape: the tensor over the buffer (which keeps the array alive), the
        # buffer as a C pointer and its address
        self._outputs: dict[tuple, tuple[torch.Tensor, object, int]] = {}

    def pooled(self, x: torch.Tensor, out_shape: tuple, geometry: tuple) -> torch.Tensor:
        entry = self._outputs.get(out_shape)
        if entry is None:
            out = activation_buffer(out_shape)
            entry = self._outputs[out_shape] = (torch.from_numpy(out),
                                                native.float_ptr(self.built, out),
                                                out.ctypes.data)
        tensor, out_ptr, _ = entry
        x = x.contiguous()
        rc = getattr(self.built.lib, self.function)(
            self.built.ffi.cast("float *", x.data_ptr()), *geometry, out_ptr, self.threads)
        native.check_rc(self.built, rc, self.function)
        return tensor

    def holds_buffer(self, address: int) -> bool:
        """Whether one of the output buffers this pool's calls write again starts at
        ``address``."""
        return any(start == address for _, _, start in self._outputs.values())


class MaxPool(PooledInC):
    """nn.MaxPool2d (dilation 1, floor rounding) on 4-D float32 inputs; others go to PyTorch."""

    function = "spconv_max_pool"

    def __init__(self, pool: nn.MaxPool2d, threads: int, built):
        super().__init__(threads, built)
        self.pool = pool
        self.kernel, self.padding = _pair(pool.kernel_size), _pair(pool.padding)
        self.stride = _pair(pool.stride or pool.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not runs_in_c(x):
            return self.pool(x)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh <= 0 or ow <= 0:
            return self.pool(x)
        return self.pooled(x, (n, c, oh, ow), (n * c, h, w, kh, kw, sh, sw, ph, pw, oh, ow))


class GlobalAvgPool(PooledInC):
    """nn.AdaptiveAvgPool2d to 1x1 on 4-D float32 inputs; others go to PyTorch."""

    function = "spconv_global_avg_pool"

    def __init__(self, pool: nn.AdaptiveAvgPool2d, threads: int, built):
        super().__init__(threads, built)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not runs_in_c(x) or x.numel() == 0:
            return self.pool(x)
        n, c, h, w = x.shape
        return self.pooled(x, (n, c, 1, 1), (n * c, h * w))


def global_poolable(pool: nn.AdaptiveAvgPool2d) -> bool:
    size = pool.output_size
    return all(s == 1 for s in (size if isinstance(size, (tuple, list)) else (size,)))


POOLS = (MaxPool, GlobalAvgPool)  # what replace_pools puts in the graph


def replace_pools(graph: fx.GraphModule, threads: int, built) -> int:
    """Swap every exactly-computable nn.MaxPool2d of the graph for MaxPool and every
    nn.AdaptiveAvgPool2d to 1x1 for GlobalAvgPool; returns how many."""
    count = 0
    for node in graph.graph.nodes:
        if node.op != "call_module":
            continue
        module = graph.get_submodule(node.target)
        if isinstance(module, nn.MaxPool2d) and fast_poolable(module):
            fast = MaxPool(module, threads, built)
        elif isinstance(module, nn.AdaptiveAvgPool2d) and global_poolable(module):
            fast = GlobalAvgPool(module, threads, built)
        else:
            continue
        name = f"fast_pool_{count}"
        graph.add_submodule(name, fast)
        node.target = name
        count += 1
    return count
