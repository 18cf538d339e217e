"""Convolution methods behind one interface.

``prepare(w, ...)`` converts the weights once for an input shape and returns a callable;
``conv2d(x, w, ...)`` is the one-shot form with ``torch.nn.functional.conv2d`` semantics plus an
optional fused ReLU. Methods: direct_sparse, pointwise_sparse (1x1 layers), lowered_sparse, lowered_scipy, dense_gemm, onednn
(with PyTorch), onnxruntime (with ONNX Runtime), reference (numpy, float64 accumulation), and
any a plugin registers. Each method class declares its capabilities (see PreparedConv);
callers select methods by them.
"""

from __future__ import annotations

from harness.conv.convspec import ConvSpec
from harness.conv.reference import reference_conv
from harness.errors import HarnessError
from harness.kernels.base import KernelError, PreparedConv, as_float32_array, check_weights
from harness.kernels.dense_gemm import DenseGemmConv
from harness.kernels.direct import DirectSparseConv, default_plan
from harness.kernels.direct_plan import DirectPlan
from harness.kernels.lowered import LoweredSparseConv
from harness.kernels.lowered_scipy import LoweredScipyConv
from harness.kernels.onednn import OneDNNConv
from harness.kernels.onnxruntime import OnnxRuntimeConv
from harness.kernels.pointwise import PointwiseSparseConv
from harness.kernels.reference import ReferenceConv

METHODS: dict[str, type[PreparedConv]] = {
    cls.method: cls
    for cls in (DirectSparseConv, PointwiseSparseConv, LoweredSparseConv, LoweredScipyConv,
                DenseGemmConv, OneDNNConv, OnnxRuntimeConv, ReferenceConv)
}


def register(cls: type[PreparedConv]) -> type[PreparedConv]:
    """Add a method (a PreparedConv subclass with a unique ``method`` name and its declared
    capabilities); usable as a decorator in a plugin module that sweeps load with --plugin."""
    if not (isinstance(cls, type) and issubclass(cls, PreparedConv)):
        raise HarnessError(f"register() takes a PreparedConv subclass, got {cls!r}")
    METHODS[cls.method] = cls
    return cls


def method_class(name: str) -> type[PreparedConv]:
    if name not in METHODS:
        raise HarnessError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]


def methods_where(**capabilities) -> list[str]:
    """Names of the registered methods whose declared capabilities match, e.g. dense=True."""
    return [name for name, cls in METHODS.items()
            if all(getattr(cls, cap) == want for cap, want in capabilities.items())]


def available_methods() -> list[str]:
    """Methods that can run here (onednn needs PyTorch, lowered_scipy needs scipy)."""
    return [m for m, cls in METHODS.items() if cls.available()]


def modelled_method() -> str:
    """The method the performance models describe (the direct kernel)."""
    return next(m for m, cls in METHODS.items() if cls.modelled)


# The sparse kernels a network's layer runs on, most specialised first: the first that applies
# to a layer's geometry is the one harness.sparsify deploys and the one its timing stands for.
SPARSE_RUNNERS = ("pointwise_sparse", "direct_sparse")


def sparse_method_for(spec: ConvSpec) -> str:
    """The sparse kernel that runs a layer of this geometry in a sparsified network."""
    return next(m for m in SPARSE_RUNNERS if METHODS[m].applies(spec))


def default_methods() -> list[str]:
    """What a sweep times when no methods are named: every available one but the reference."""
    return [m for m in available_methods() if METHODS[m].in_default_sweep]


def prepare(w, bias=None, *, input_shape, stride=1, padding=0, dilation=1, groups=1,
            relu=False, relu_max=None, method="direct_sparse", threads=1,
            **options) -> PreparedConv:
    """Convert ``w`` (M, C/groups, KH, KW) once for inputs of ``input_shape`` (N, C, H, W).
    ``relu`` applies a ReLU to the output, capped at ``relu_max`` where given (6.0: ReLU6).

    ``options`` go to the method: ``kernels`` (a build from harness.machine.build; default the
    host profile's), ``plan`` (a DirectPlan for direct_sparse)."""
    cls = method_class(method)
    w, bias = check_weights(w, bias)
    spec = ConvSpec.from_shapes(tuple(input_shape), w.shape, stride, padding, dilation, groups)
    return cls(w, bias, spec, relu=relu, relu_max=relu_max, threads=threads, **options)


def conv2d(x, w, bias=None, *, stride=1, padding=0, dilation=1, groups=1, relu=False,
           relu_max=None, method="direct_sparse", threads=1, **options):
    """One convolution, float32 (N, M, OH, OW); same semantics as torch's conv2d."""
    x = as_float32_array("input", x)
    if x.ndim != 4:
        raise HarnessError(f"input must be 4-D (N, C, H, W), got shape {x.shape}")
    kernel = prepare(w, bias, input_shape=x.shape, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, relu=relu, relu_max=relu_max, method=method,
                     threads=threads, **options)
    return kernel(x)


__all__ = ["prepare", "conv2d", "register", "METHODS", "method_class", "methods_where",
           "available_methods", "default_methods", "modelled_method", "SPARSE_RUNNERS",
           "sparse_method_for", "PreparedConv",
           "KernelError", "DirectPlan", "default_plan", "ConvSpec", "reference_conv"]
