"""A convolution read from a model: its geometry, its weights with BatchNorm folded in, and
whether a ReLU (or a capped one, ReLU6) follows; the common form of both importers (PyTorch
and ONNX)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from harness.conv.convspec import ConvSpec
from harness.conv.layers import LayerShape
from harness.errors import HarnessError


@dataclass
class ModelConv:
    name: str
    input_shape: tuple[int, int, int, int]  # (N, C, H, W) as it runs in the model
    weight: np.ndarray                      # float32 (M, C/groups, KH, KW), BatchNorm folded in
    bias: np.ndarray | None                 # float32 (M,), BatchNorm folded in
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    relu: bool = False                      # a ReLU follows (and is fused)
    relu_max: float | None = None           # its cap (6.0: ReLU6); None: uncapped
    batchnorm: str | None = None            # the BatchNorm folded in, by name

    def spec(self, batch: int | None = None) -> ConvSpec:
        shape = self.input_shape if batch is None else (batch, *self.input_shape[1:])
        return ConvSpec.from_shapes(shape, self.weight.shape, self.stride, self.padding,
                                    self.dilation, self.groups)

    def layer_shape(self, network: str) -> LayerShape:
        """The layer as the sweep's catalog writes it (square kernels, strides, padding and
        dilation only)."""
        _, c, h, w = self.input_shape
        m, _, kh, kw = self.weight.shape
        pairs = (self.stride, self.padding, self.dilation, (kh, kw))
        if any(a != b for a, b in pairs):
            raise HarnessError(f"{self.name}: a non-square kernel, stride, padding or dilation "
                               f"({kh}x{kw}, stride {self.stride}, padding {self.padding}) "
                               "cannot be swept as a catalog layer")
        return LayerShape(network, self.name, c, h, w, m, kh, self.stride[0], self.padding[0],
                          self.dilation[0], self.groups)


def clamp_relu_cap(low, high) -> float | None:
    """A clamp of its input to [low, high] read as a ReLU: its cap (math.inf without an upper
    bound, 6.0 for ReLU6), or None where it is no ReLU (a lower bound other than 0, an upper
    bound not above it, a bound that is not a number)."""
    if not isinstance(low, numbers.Real) or low != 0:
        return None
    if high is None:
        return math.inf
    return float(high) if isinstance(high, numbers.Real) and high > 0 else None


def relu_max_of(cap: float | None) -> float | None:
    """A fused convolution's relu_max for a ReLU of this cap (None: uncapped, or none)."""
    return None if cap is None or math.isinf(cap) else cap


def fold_batchnorm(weight: np.ndarray, bias: np.ndarray | None, scale, shift, mean, var,
                   eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of conv followed by BatchNorm(scale, shift, mean, var, eps), in
    float64 and rounded once."""
    factor = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    b = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
    folded_w = weight.astype(np.float64) * factor[:, None, None, None]
    folded_b = (b - np.asarray(mean, np.float64)) * factor + np.asarray(shift, np.float64)
    return folded_w.astype(np.float32), folded_b.astype(np.float32)


def sweep_layers(convs: list[ModelConv], network: str):
    """The model's convolutions as sweep layers, their real weights by layer key, and a note
    for each convolution the sweep cannot express."""
    layers, weights, notes = [], {}, []
    for conv in convs:
        try:
            layer = conv.layer_shape(network)
        except HarnessError as exc:
            notes.append(str(exc))
            continue
        layers.append(layer)
        weights[layer.key] = conv.weight
    return layers, weights, notes
