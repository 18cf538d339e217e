"""An ONNX model's convolutions, read with the onnx package and its shape inference: each
Conv with the BatchNormalization and the Relu that follow it alone, folded and noted."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.networks.layers import ModelConv, clamp_relu_cap, fold_batchnorm, relu_max_of

STANDARD_DOMAINS = ("", "ai.onnx")


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError:
        raise HarnessError("reading ONNX models needs the onnx package: "
                           "pip install 'sparseconv-harness[onnx]'") from None
    return onnx, numpy_helper, shape_inference


def load_onnx(path: str | Path):
    """The model with inferred shapes; a file that is not ONNX is one clear error."""
    onnx, _, shape_inference = _onnx()
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: ONNX model not found")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError and others
        text = str(exc).strip().splitlines()
        raise HarnessError(f"{path}: not a valid ONNX model "
                           f"({text[0] if text else type(exc).__name__})") from None
    try:
        return shape_inference.infer_shapes(model)
    except Exception as exc:
        raise HarnessError(f"{path}: ONNX shape inference failed: "
                           f"{str(exc).strip().splitlines()[0]}") from None


def attributes(node) -> dict:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def static_shapes(graph) -> dict[str, tuple]:
    """Tensor name -> static shape, for every tensor whose dimensions are all known."""
    shapes = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def constants(graph) -> dict[str, np.ndarray]:
    _, numpy_helper, _ = _onnx()
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
            attrs = attributes(node)
            if "value" in attrs:
                values[node.output[0]] = numpy_helper.to_array(attrs["value"])
    return values


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def padding_pairs(attrs: dict, shape: tuple | None, kernel: tuple, stride: tuple,
                  dilation: tuple) -> list[tuple[int, int]]:
    """[(top, bottom), (left, right)] of a Conv or pool's attributes (``shape``, the input's,
    is needed only for 'SAME' padding)."""
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "VALID":
        return [(0, 0), (0, 0)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if shape is None:
            raise HarnessError("'SAME' padding on an input of unknown shape")
        pairs = [_same_padding(shape[2 + i], kernel[i], stride[i], dilation[i]) for i in range(2)]
        return pairs if auto == "SAME_UPPER" else [p[::-1] for p in pairs]
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    return [(pads[0], pads[2]), (pads[1], pads[3])]


def _padding(attrs: dict, shape: tuple, kernel: tuple, stride: tuple, dilation: tuple):
    """(pad_h, pad_w), or None where the padding is not the same on both sides."""
    pairs = padding_pairs(attrs, shape, kernel, stride, dilation)
    if any(a != b for a, b in pairs):
        return None
    return (pairs[0][0], pairs[1][0])


def layer_name(node, index: int, taken: set[str]) -> str:
    """A convolution's name from its node (ONNX exporters write paths like /a/b/Conv), unique
    among ``taken``, to which it is added: names become parts of keys and file names."""
    name = re.sub(r"[^A-Za-z0-9_.]+", ".", node.name or node.output[0]).strip(".") or "conv"
    if name in taken:
        name = f"{name}_{index}"
    taken.add(name)
    return name


def import_onnx(path: str | Path) -> tuple[list[ModelConv], list[str]]:
    """The convolutions of the ONNX model at ``path`` in graph order, and a note for each
    operation or convolution that could not be read (the others are still returned)."""
    model = load_onnx(path)
    graph = model.graph
    shapes, stored = static_shapes(graph), constants(graph)
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def sole(name: str, op: str):
        users = consumers.get(name, [])
        if name in outputs or len(users) != 1:
            return None
        user = users[0]
        return user if user.op_type == op and user.domain in STANDARD_DOMAINS else None

    convs, notes, names = [], [], set()
    for index, node in enumerate(graph.node):
        if node.domain not in STANDARD_DOMAINS:
            notes.append(f"operation {node.op_type!r} (domain {node.domain!r}, node "
                         f"{node.name or index!r}) is not supported: convolutions whose input "
                         "shape depends on it are left out")
            continue
        if node.op_type != "Conv":
            continue
        name = layer_name(node, index, names)
        try:
            convs.append(_conv(node, name, shapes, stored, sole))
        except HarnessError as exc:
            notes.append(f"Conv {name!r}: {exc}; left out")
    return convs, notes


def _conv(node, name, shapes, constants, sole) -> ModelConv:
    attrs = attributes(node)
    x, w_name = node.input[0], node.input[1]
    if w_name not in constants:
        raise HarnessError("its weights are computed in the graph, not stored")
    weight = np.asarray(constants[w_name], dtype=np.float32)
    if weight.ndim != 4:
        raise HarnessError(f"a {weight.ndim - 2}-D convolution (only 2-D ones are supported)")
    if x not in shapes:
        raise HarnessError("its input shape is unknown (after an unsupported operation, or "
                           "with dynamic dimensions)")
    shape = shapes[x]
    bias = None
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in constants:
            raise HarnessError("its bias is computed in the graph, not stored")
        bias = np.asarray(constants[node.input[2]], dtype=np.float32)
    kernel = tuple(attrs.get("kernel_shape", weight.shape[2:]))
    stride = tuple(attrs.get("strides", (1, 1)))
    dilation = tuple(attrs.get("dilations", (1, 1)))
    padding = _padding(attrs, shape, kernel, stride, dilation)
    if padding is None:
        raise HarnessError("its padding differs between the two sides of a dimension")
    last, bn_name = node.output[0], None
    bn = sole(last, "BatchNormalization")
    if bn is not None and all(i in constants for i in bn.input[1:5]):
        scale, shift, mean, var = (constants[i] for i in bn.input[1:5])
        weight, bias = fold_batchnorm(weight, bias, scale, shift, mean, var,
                                      float(attributes(bn).get("epsilon", 1e-5)))
        last, bn_name = bn.output[0], bn.name or bn.output[0]
    cap = _clip_relu_cap(sole(last, "Clip"), constants)
    return ModelConv(name=name, input_shape=tuple(int(d) for d in shape),
                     weight=np.ascontiguousarray(weight), bias=bias, stride=stride,
                     padding=padding, dilation=dilation, groups=int(attrs.get("group", 1)),
                     relu=sole(last, "Relu") is not None or cap is not None,
                     relu_max=relu_max_of(cap), batchnorm=bn_name)


def clip_bounds(clip, input_constant) -> tuple:
    """A Clip's (min, max): its inputs 1 and 2 (opset 11 on; ``input_constant(i)`` gives
    input i's stored value or None) where given, else its attributes; None for neither."""
    attrs = attributes(clip)
    return tuple(float(value) if (value := input_constant(i)) is not None else attrs.get(name)
                 for i, name in ((1, "min"), (2, "max")))


def _clip_relu_cap(clip, constants) -> float | None:
    """A Clip read as a ReLU (harness.networks.layers.clamp_relu_cap): its cap (math.inf
    without an upper bound), else None."""
    if clip is None:
        return None
    return clamp_relu_cap(*clip_bounds(clip, lambda i: constants.get(clip.input[i])
                                       if len(clip.input) > i and clip.input[i] else None))
