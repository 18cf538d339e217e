"""Convolution methods behind one interface.

``prepare(w, ...)`` converts the weights once for an input shape and returns a callable;
``conv2d(x, w, ...)`` is the one-shot form with ``torch.nn.functional.conv2d`` semantics plus an
optional fused ReLU. Methods: direct_sparse, lowered_sparse, lowered_scipy, dense_gemm, onednn
(with PyTorch), reference (numpy, float64 accumulation).
"""

from __future__ import annotations

from ..convspec import ConvSpec
from ..errors import HarnessError
from .base import KernelError, PreparedConv, as_float32_array, check_weights
from .dense_gemm import DenseGemmConv
from .direct import DirectPlan, DirectSparseConv, default_plan
from .lowered import LoweredSparseConv
from .lowered_scipy import LoweredScipyConv
from .onednn import OneDNNConv, onednn_available
from .reference import ReferenceConv, reference_conv

METHODS: dict[str, type[PreparedConv]] = {
    cls.method: cls
    for cls in (DirectSparseConv, LoweredSparseConv, LoweredScipyConv, DenseGemmConv, OneDNNConv,
                ReferenceConv)
}
DENSE_METHODS = ("dense_gemm", "onednn")


def register(cls: type[PreparedConv]) -> type[PreparedConv]:
    """Add a method (a PreparedConv subclass with a unique ``method`` name); usable as a
    decorator in a plugin module that sweeps load with --plugin."""
    METHODS[cls.method] = cls
    return cls


def _scipy_available() -> bool:
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        return False
    return True


def available_methods() -> list[str]:
    """Methods that can run here (onednn needs PyTorch, lowered_scipy needs scipy)."""
    optional = {"onednn": onednn_available, "lowered_scipy": _scipy_available}
    return [m for m in METHODS if m not in optional or optional[m]()]


def prepare(w, bias=None, *, input_shape, stride=1, padding=0, dilation=1, groups=1,
            relu=False, method="direct_sparse", threads=1, **options) -> PreparedConv:
    """Convert ``w`` (M, C/groups, KH, KW) once for inputs of ``input_shape`` (N, C, H, W).

    ``options`` go to the method: ``kernels`` (a build from harness.build; default the host
    profile's), ``plan`` (a DirectPlan for direct_sparse)."""
    if method not in METHODS:
        raise HarnessError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    w, bias = check_weights(w, bias)
    spec = ConvSpec.from_shapes(tuple(input_shape), w.shape, stride, padding, dilation, groups)
    return METHODS[method](w, bias, spec, relu=relu, threads=threads, **options)


def conv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, relu=False,
           method="direct_sparse", threads=1, **options):
    """One convolution, float32 (N, M, OH, OW); same semantics as torch's conv2d."""
    x = as_float32_array("input", x)
    if x.ndim != 4:
        raise HarnessError(f"input must be 4-D (N, C, H, W), got shape {x.shape}")
    kernel = prepare(w, bias, input_shape=x.shape, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, relu=relu, method=method,
                     threads=threads, **options)
    return kernel(x)


__all__ = ["prepare", "conv2d", "register", "METHODS", "DENSE_METHODS", "available_methods",
           "PreparedConv", "KernelError", "DirectPlan", "default_plan", "ConvSpec",
           "reference_conv"]
