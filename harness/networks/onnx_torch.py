"""An ONNX model as a runnable PyTorch module: its graph rebuilt as a torch.fx GraphModule whose
convolutions, BatchNorms, ReLUs and pools are real nn modules, so that harness.sparsify finds,
folds and fuses them exactly as in a model written in PyTorch.

Only the operations of ordinary CNN graphs are converted (the table ``_CONVERTERS``); a model
with any other operation is refused with its name, since it could not run whole (its
convolutions can still be swept: ``spconv sweep --model FILE.onnx``)."""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

from harness.errors import HarnessError
from harness.kernels.base import RELU6
from harness.networks.layers import clamp_relu_cap
from harness.networks.onnx_import import (STANDARD_DOMAINS, attributes, clip_bounds, constants,
                                          layer_name, load_onnx, padding_pairs, static_shapes)


class _Builder:
    """The fx graph under construction: ONNX tensor names -> fx nodes, the modules and
    constant tensors it installs, and the shapes ONNX's inference gave."""

    def __init__(self, graph, path: str):
        self.path = path
        self.fx = fx.Graph()
        self.modules: dict[str, object] = {}   # qualified name -> module or tensor (GraphModule root)
        self.values: dict[str, fx.Node] = {}
        self.constants = constants(graph)
        self.shapes = static_shapes(graph)
        self.names: set[str] = set()
        self.batch: int | None = None  # the model's own batch size

    def value(self, name: str) -> fx.Node:
        """The node computing tensor ``name``; a stored constant becomes a tensor attribute of
        the module."""
        if name not in self.values:
            if name not in self.constants:
                raise HarnessError(f"{self.path}: tensor {name!r} is used before it is computed")
            target = f"const_{len(self.modules)}"
            self.modules[target] = torch.from_numpy(np.array(self.constants[name]))
            self.values[name] = self.fx.get_attr(target)
        return self.values[name]

    def constant(self, node, index: int) -> np.ndarray | None:
        """Input ``index`` of ``node`` as a stored constant (None where it is absent or empty);
        a computed one is refused, naming the operation."""
        if len(node.input) <= index or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.constants:
            raise HarnessError(f"{self.path}: {node.op_type} node {node.name or node.output[0]!r} "
                               f"takes input {index} ({name!r}) computed in the graph; only "
                               "stored constants are supported there")
        return np.asarray(self.constants[name])

    def module(self, node, index: int, module: nn.Module, *args) -> fx.Node:
        """Install ``module`` under the node's name (as import_onnx names layers) and call it."""
        target = layer_name(node, index, self.names)
        if self._clashes(target):  # a name that is another's parent module: flatten it
            target = target.replace(".", "_")
            while target in self.modules:
                target += "_"
        self.modules[target] = module
        return self.fx.call_module(target, args)

    def _clashes(self, target: str) -> bool:
        """Whether installing ``target`` (a dotted path) would put a module inside another
        module or under a constant, or another module inside it."""
        parts = target.split(".")
        parents = {".".join(parts[:i]) for i in range(1, len(parts))}
        return any(name in parents or name.startswith(target + ".") for name in self.modules)

    def call(self, function, *args, **kwargs) -> fx.Node:
        return self.fx.call_function(function, args, kwargs)

    def shape(self, name: str) -> tuple | None:
        return self.shapes.get(name)


def _pair(values, default) -> tuple[int, int]:
    values = tuple(int(v) for v in (values if values is not None else default))
    if len(values) != 2:
        raise HarnessError(f"only 2-D operations are supported (got {len(values)}-D)")
    return values


def _spatial_padding(b: _Builder, node, attrs, kernel, stride, dilation):
    """(symmetric padding for the module, F.pad amounts for the rest or None)."""
    try:
        (top, bottom), (left, right) = padding_pairs(attrs, b.shape(node.input[0]), kernel,
                                                     stride, dilation)
    except HarnessError as exc:
        raise HarnessError(f"{b.path}: {node.op_type} {node.name!r}: {exc}") from None
    common = (min(top, bottom), min(left, right))
    extra = (left - common[1], right - common[1], top - common[0], bottom - common[0])
    return common, (extra if any(extra) else None)


def _conv(b: _Builder, node, index, attrs):
    weight = b.constant(node, 1)
    if weight is None or weight.ndim != 4:
        raise HarnessError(f"{b.path}: Conv {node.name!r} is not a 2-D convolution with stored "
                           "weights")
    bias = b.constant(node, 2)
    kernel = _pair(attrs.get("kernel_shape"), weight.shape[2:])
    stride, dilation = _pair(attrs.get("strides"), (1, 1)), _pair(attrs.get("dilations"), (1, 1))
    padding, extra = _spatial_padding(b, node, attrs, kernel, stride, dilation)
    groups = int(attrs.get("group", 1))
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], kernel, stride, padding,
                     dilation, groups, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    x = b.value(node.input[0])
    if extra:
        x = b.call(F.pad, x, extra)
    return b.module(node, index, conv, x)


def _batchnorm(b: _Builder, node, index, attrs):
    scale, shift, mean, var = (b.constant(node, i) for i in range(1, 5))
    bn = nn.BatchNorm2d(len(scale), eps=float(attrs.get("epsilon", 1e-5)))
    with torch.no_grad():
        for tensor, value in ((bn.weight, scale), (bn.bias, shift), (bn.running_mean, mean),
                              (bn.running_var, var)):
            tensor.copy_(torch.from_numpy(value.astype(np.float32)))
    return b.module(node, index, bn.eval(), b.value(node.input[0]))


def _pool(kind):
    def convert(b: _Builder, node, index, attrs):
        kernel = _pair(attrs["kernel_shape"], None)
        stride = _pair(attrs.get("strides"), (1, 1))
        dilation = _pair(attrs.get("dilations"), (1, 1))
        padding, extra = _spatial_padding(b, node, attrs, kernel, stride, dilation)
        ceil = bool(attrs.get("ceil_mode", 0))
        x = b.value(node.input[0])
        if kind == "max":
            if extra:
                x = b.call(F.pad, x, extra, value=float("-inf"))
            return b.module(node, index, nn.MaxPool2d(kernel, stride, padding, dilation,
                                                      ceil_mode=ceil), x)
        if extra or dilation != (1, 1):
            raise HarnessError(f"{b.path}: AveragePool {node.name!r} with asymmetric padding "
                               "or dilation is not supported")
        return b.module(node, index, nn.AvgPool2d(
            kernel, stride, padding, ceil_mode=ceil,
            count_include_pad=bool(attrs.get("count_include_pad", 0))), x)
    return convert


def _clip(b: _Builder, node, index, attrs):
    low, high = clip_bounds(node, lambda i: b.constant(node, i))
    x = b.value(node.input[0])
    cap = clamp_relu_cap(low, high)
    if cap == math.inf:
        return b.module(node, index, nn.ReLU(), x)
    if cap is not None:  # a capped ReLU (ReLU6), fused as one
        return b.module(node, index, nn.ReLU6() if cap == RELU6 else nn.Hardtanh(0.0, cap), x)
    return b.call(torch.clamp, x, min=low, max=high)


def _binary(function):
    def convert(b: _Builder, node, index, attrs):
        return b.call(function, b.value(node.input[0]), b.value(node.input[1]))
    return convert


def _unary(function, **fixed):
    def convert(b: _Builder, node, index, attrs):
        return b.call(function, b.value(node.input[0]), **fixed)
    return convert


def _gemm(b: _Builder, node, index, attrs):
    a, w = b.value(node.input[0]), b.value(node.input[1])
    if attrs.get("transA", 0):
        a = b.call(torch.transpose, a, 0, 1)
    if attrs.get("transB", 0):
        w = b.call(torch.transpose, w, 0, 1)
    y = b.call(torch.matmul, a, w)
    if attrs.get("alpha", 1.0) != 1.0:
        y = b.call(operator.mul, y, float(attrs["alpha"]))
    if len(node.input) > 2 and node.input[2]:
        c = b.value(node.input[2])
        if attrs.get("beta", 1.0) != 1.0:
            c = b.call(operator.mul, c, float(attrs["beta"]))
        y = b.call(operator.add, y, c)
    return y


def _axes(b: _Builder, node, attrs):
    axes = b.constant(node, 1) if len(node.input) > 1 else None  # opset 13 on: an input
    axes = attrs.get("axes") if axes is None else axes
    return None if axes is None else tuple(int(a) for a in np.ravel(axes))


def _reshape(b: _Builder, node, index, attrs):
    shape = [int(d) for d in b.constant(node, 1)]
    x = b.value(node.input[0])
    # the batch is the one size that changes between runs: a stored leading size equal to
    # the model's own batch follows the input's
    if shape and b.batch is not None and shape[0] == b.batch:
        shape[0] = -1 if -1 not in shape[1:] else b.call(
            operator.getitem, b.call(getattr, x, "shape"), 0)
    if 0 in shape and not attrs.get("allowzero", 0):
        sizes = b.call(getattr, x, "shape")
        shape = [b.call(operator.getitem, sizes, i) if d == 0 else d for i, d in enumerate(shape)]
    return b.call(torch.reshape, x, tuple(shape))


def _squeeze(b, node, index, attrs):
    axes = _axes(b, node, attrs)
    x = b.value(node.input[0])
    return b.call(torch.squeeze, x, axes) if axes is not None else b.call(torch.squeeze, x)


def _unsqueeze(b, node, index, attrs):
    x = b.value(node.input[0])
    for axis in sorted(_axes(b, node, attrs)):
        x = b.call(torch.unsqueeze, x, axis)
    return x


def _reduce_mean(b, node, index, attrs):
    axes = _axes(b, node, attrs)
    keep = bool(attrs.get("keepdims", 1))
    x = b.value(node.input[0])
    return b.call(torch.mean, x, axes, keepdim=keep) if axes else b.call(torch.mean, x)


def _pad(b, node, index, attrs):
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = b.constant(node, 1)
    pads = [int(p) for p in (attrs.get("pads") if pads is None else pads)]
    value = b.constant(node, 2)
    half = len(pads) // 2
    torch_pads = []  # F.pad lists the last dimension first, (start, end) each
    for d in reversed(range(half)):
        torch_pads += [pads[d], pads[d + half]]
    kwargs = {"value": float(value)} if mode == "constant" and value is not None else {}
    return b.call(F.pad, b.value(node.input[0]), tuple(torch_pads), mode=mode, **kwargs)


def _slice(b, node, index, attrs):
    starts, ends = b.constant(node, 1), b.constant(node, 2)
    if starts is None:  # before opset 10: attributes
        starts, ends = attrs["starts"], attrs["ends"]
    axes = b.constant(node, 3)
    axes = attrs.get("axes", range(len(starts))) if axes is None else axes
    steps = b.constant(node, 4)
    steps = [1] * len(starts) if steps is None else steps
    limit = np.iinfo(np.int64)
    index_by_axis = {}
    for axis, start, end, step in zip(axes, starts, ends, steps):
        # ONNX marks "to the end" with the extreme int64 values
        end = None if int(end) >= limit.max or int(end) <= limit.min else int(end)
        index_by_axis[int(axis)] = slice(int(start), end, int(step))
    rank = max(index_by_axis) + 1 if min(index_by_axis) >= 0 else None
    if rank is None:
        raise HarnessError(f"{b.path}: Slice {node.name!r} on negative axes is not supported")
    key = tuple(index_by_axis.get(a, slice(None)) for a in range(rank))
    return b.call(operator.getitem, b.value(node.input[0]), key)


_CONVERTERS = {
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    "Relu": lambda b, node, index, attrs: b.module(node, index, nn.ReLU(), b.value(node.input[0])),
    "Clip": _clip,
    "LeakyRelu": lambda b, node, index, attrs: b.call(
        F.leaky_relu, b.value(node.input[0]), float(attrs.get("alpha", 0.01))),
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "HardSigmoid": _unary(F.hardsigmoid),
    "HardSwish": _unary(F.hardswish),
    "Add": _binary(operator.add),
    "Sub": _binary(operator.sub),
    "Mul": _binary(operator.mul),
    "Div": _binary(operator.truediv),
    "MatMul": _binary(torch.matmul),
    "Gemm": _gemm,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": _unary(F.adaptive_avg_pool2d, output_size=1),
    "GlobalMaxPool": _unary(F.adaptive_max_pool2d, output_size=1),
    "Flatten": lambda b, node, index, attrs: b.call(
        torch.flatten, b.value(node.input[0]), int(attrs.get("axis", 1))),
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "ReduceMean": _reduce_mean,
    "Concat": lambda b, node, index, attrs: b.call(
        torch.cat, [b.value(i) for i in node.input], int(attrs["axis"])),
    "Transpose": lambda b, node, index, attrs: b.call(
        torch.permute, b.value(node.input[0]), tuple(int(p) for p in attrs["perm"])),
    "Softmax": lambda b, node, index, attrs: b.call(
        torch.softmax, b.value(node.input[0]), int(attrs.get("axis", -1))),
    "Pad": _pad,
    "Slice": _slice,
    "Identity": lambda b, node, index, attrs: b.value(node.input[0]),
    "Dropout": lambda b, node, index, attrs: b.value(node.input[0]),  # inference: identity
}


def onnx_module(path, batch: int | None = None, seed: int = 0) -> tuple[fx.GraphModule, torch.Tensor]:
    """(the ONNX model at ``path`` as a PyTorch module in eval mode, an example input of
    ``batch`` images, or the model's own batch), seeded. An operation without a converter,
    several graph inputs or outputs, or an input of unknown size is one clear error."""
    model = load_onnx(path)
    graph, path = model.graph, str(path)
    b = _Builder(graph, path)
    inputs = [i for i in graph.input if i.name not in b.constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise HarnessError(f"{path}: only models with one input and one output can run whole "
                           f"(it has {len(inputs)} and {len(graph.output)})")
    shape = b.shape(inputs[0].name)
    if shape is None or len(shape) != 4:
        raise HarnessError(f"{path}: its input {inputs[0].name!r} needs a fixed 4-D shape "
                           "(N, C, H, W) to run whole")
    b.batch = shape[0]
    b.values[inputs[0].name] = b.fx.placeholder("x")
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
            continue  # already among the constants
        convert = _CONVERTERS.get(node.op_type) if node.domain in STANDARD_DOMAINS else None
        if convert is None:
            raise HarnessError(
                f"{path}: operation {node.op_type!r} (domain {node.domain or 'ai.onnx'!r}, node "
                f"{node.name or index!r}) cannot run in the whole network; its convolutions can "
                "still be swept with spconv sweep --model")
        if len(node.output) != 1 and node.op_type not in ("Dropout", "BatchNormalization"):
            raise HarnessError(f"{path}: {node.op_type} node {node.name or index!r} has "
                               f"{len(node.output)} outputs; only one is supported")
        try:
            b.values[node.output[0]] = convert(b, node, index, attributes(node))
        except HarnessError:
            raise
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise HarnessError(f"{path}: {node.op_type} node {node.name or index!r} could not "
                               f"be converted: {exc}") from None
    b.fx.output(b.value(graph.output[0].name))
    module = fx.GraphModule(b.modules, b.fx, class_name="OnnxModel").eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn((batch or shape[0], *shape[1:]), generator=generator)
    return module, example
