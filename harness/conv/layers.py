"""Convolution layer shapes: the network catalog and layers from a user's YAML file."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from harness.conv.convspec import ConvSpec
from harness.errors import HarnessError, ShapeError


@dataclass(frozen=True)
class LayerShape:
    """One convolution layer of a network, independent of the batch size."""

    network: str
    name: str
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    @property
    def key(self) -> str:
        return f"{self.network}/{self.name}"

    @property
    def geometry(self) -> str:
        """The shape as text: part of every sweep point's key."""
        return (f"{self.in_channels}x{self.height}x{self.width}->{self.out_channels}"
                f"k{self.kernel}s{self.stride}p{self.padding}d{self.dilation}g{self.groups}")

    def spec(self, batch: int = 1) -> ConvSpec:
        for name in ("groups", "kernel", "stride", "dilation"):
            if getattr(self, name) < 1:
                raise ShapeError(f"{name} must be at least 1, got {getattr(self, name)}")
        return ConvSpec.from_shapes(
            (batch, self.in_channels, self.height, self.width),
            (self.out_channels, self.in_channels // self.groups, self.kernel, self.kernel),
            self.stride, self.padding, self.dilation, self.groups)

    def as_dict(self) -> dict:
        return asdict(self)


def _alexnet() -> list[LayerShape]:
    # CaffeNet's convolutions (paper-notes section 4).
    return [
        LayerShape("alexnet", "conv1", 3, 227, 227, 96, 11, 4, 0),
        LayerShape("alexnet", "conv2", 96, 27, 27, 256, 5, 1, 2, groups=2),
        LayerShape("alexnet", "conv3", 256, 13, 13, 384, 3, 1, 1),
        LayerShape("alexnet", "conv4", 384, 13, 13, 384, 3, 1, 1, groups=2),
        LayerShape("alexnet", "conv5", 384, 13, 13, 256, 3, 1, 1, groups=2),
    ]


def _vgg16() -> list[LayerShape]:
    stages = [(224, [(3, 64), (64, 64)]), (112, [(64, 128), (128, 128)]),
              (56, [(128, 256), (256, 256), (256, 256)]),
              (28, [(256, 512), (512, 512), (512, 512)]),
              (14, [(512, 512), (512, 512), (512, 512)])]
    return [LayerShape("vgg16", f"conv{s + 1}_{i + 1}", c, hw, hw, m, 3, 1, 1)
            for s, (hw, convs) in enumerate(stages) for i, (c, m) in enumerate(convs)]


# ResNet-50 (v1.5: the 3x3 convolution strides): (width, blocks, stride) per stage, at 224.
RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
RESNET50_EXPANSION = 4

# MobileNetV2: (expansion, out channels, blocks, stride) per stage, at 224.
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
MOBILENETV2_STEM, MOBILENETV2_HEAD = 32, 1280


def distinct(layers: list[LayerShape]) -> list[LayerShape]:
    """One layer per geometry, named after its first occurrence: a sweep times a shape once."""
    seen: dict[str, LayerShape] = {}
    for layer in layers:
        seen.setdefault(layer.geometry, layer)
    return list(seen.values())


def resnet50_convolutions() -> list[LayerShape]:
    """Every convolution of ResNet-50 in execution order, named as harness.networks names
    them: the 7x7 stem, each block's 1x1, 3x3 and 1x1, and the strided 1x1 shortcuts."""
    net = "resnet50"
    layers = [LayerShape(net, "conv1", 3, 224, 224, 64, 7, 2, 3)]
    channels, size = 64, 56  # after the stem's stride and the 3x3/2 max pool
    for s, (width, blocks, stride) in enumerate(RESNET50_STAGES, start=1):
        out = width * RESNET50_EXPANSION
        for b in range(blocks):
            step = stride if b == 0 else 1
            name = f"layer{s}.{b}"
            layers += [LayerShape(net, f"{name}.conv1", channels, size, size, width, 1),
                       LayerShape(net, f"{name}.conv2", width, size, size, width, 3, step, 1)]
            after = size // step
            layers.append(LayerShape(net, f"{name}.conv3", width, after, after, out, 1))
            if b == 0:
                layers.append(LayerShape(net, f"{name}.downsample.0", channels, size, size,
                                         out, 1, step))
            channels, size = out, after
    return layers


def mobilenetv2_convolutions() -> list[LayerShape]:
    """Every convolution of MobileNetV2 in execution order: the stem, each inverted
    residual's 1x1 expansion, 3x3 depthwise and 1x1 projection, and the 1x1 head."""
    net = "mobilenetv2"
    layers = [LayerShape(net, "features.0.0", 3, 224, 224, MOBILENETV2_STEM, 3, 2, 1)]
    channels, size, index = MOBILENETV2_STEM, 112, 1
    for expansion, out, blocks, stride in MOBILENETV2_STAGES:
        for b in range(blocks):
            step = stride if b == 0 else 1
            hidden, name = channels * expansion, f"features.{index}"
            if expansion != 1:
                layers.append(LayerShape(net, f"{name}.expand.0", channels, size, size, hidden, 1))
            layers.append(LayerShape(net, f"{name}.depthwise.0", hidden, size, size, hidden, 3,
                                     step, 1, groups=hidden))
            size //= step
            layers.append(LayerShape(net, f"{name}.project.0", hidden, size, size, out, 1))
            channels, index = out, index + 1
    layers.append(LayerShape(net, f"features.{index}.0", channels, size, size, MOBILENETV2_HEAD, 1))
    return layers


def _googlenet() -> list[LayerShape]:
    # Inception modules: (name, size, 3x3 reduce, 3x3 out, 5x5 reduce, 5x5 out).
    modules = [("3a", 28, 96, 128, 16, 32), ("3b", 28, 128, 192, 32, 96),
               ("4a", 14, 96, 208, 16, 48), ("4b", 14, 112, 224, 24, 64),
               ("4c", 14, 128, 256, 24, 64), ("4d", 14, 144, 288, 32, 64),
               ("4e", 14, 160, 320, 32, 128), ("5a", 7, 160, 320, 32, 128),
               ("5b", 7, 192, 384, 48, 128)]
    layers = []
    for name, hw, r3, o3, r5, o5 in modules:
        layers.append(LayerShape("googlenet", f"inception_{name}_3x3", r3, hw, hw, o3, 3, 1, 1))
        layers.append(LayerShape("googlenet", f"inception_{name}_5x5", r5, hw, hw, o5, 5, 1, 2))
    return layers


CATALOG = {"alexnet": _alexnet, "vgg16": _vgg16,
           "resnet50": lambda: distinct(resnet50_convolutions()), "googlenet": _googlenet,
           "mobilenetv2": lambda: distinct(mobilenetv2_convolutions())}


def network_layers(network: str) -> list[LayerShape]:
    if network not in CATALOG:
        raise HarnessError(f"unknown network {network!r} (known: {', '.join(CATALOG)})")
    return CATALOG[network]()


MAX_LAYER_BYTES = 8 << 30  # a layer's buffers at batch 1; larger ones are refused up front
_LAYER_KEYS = {"name", "in_channels", "height", "width", "out_channels", "kernel", "stride",
               "padding", "dilation", "groups"}


def load_layer_file(path: str | Path) -> list[LayerShape]:
    """Layers from YAML: ``layers: [{name, in_channels, height, width, out_channels, kernel,
    stride?, padding?, dilation?, groups?}, ...]``, each checked to give a non-empty output."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"{path}: layer file not found") from None
    except UnicodeDecodeError:
        raise HarnessError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: YAML syntax error: {str(exc).splitlines()[0]}") from None
    entries = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise HarnessError(f"{path}: expected a mapping with a non-empty list 'layers'")
    layers = []
    for i, entry in enumerate(entries):
        where = f"{path}: layers[{i}]"
        if not isinstance(entry, dict):
            raise HarnessError(f"{where}: must be a mapping")
        unknown = set(map(str, entry)) - _LAYER_KEYS
        missing = {"name", "in_channels", "height", "width", "out_channels", "kernel"} - set(entry)
        if unknown or missing:
            raise HarnessError(f"{where}: " + (f"unknown key '{sorted(unknown)[0]}'" if unknown
                                               else f"missing '{sorted(missing)[0]}'"))
        for key, value in entry.items():
            if key != "name" and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= 1 << 20):
                raise HarnessError(f"{where}.{key}: must be an integer in [0, 2^20], got {value!r}")
        layer = LayerShape(network=path.stem, **{"name": str(entry["name"]),
                                                 **{k: v for k, v in entry.items() if k != "name"}})
        try:
            spec = layer.spec(1)
        except ShapeError as exc:
            raise HarnessError(f"{where} ({layer.name}): {exc}") from None
        if any(l.name == layer.name for l in layers):
            raise HarnessError(f"{where}: a second layer named {layer.name!r}; layer names must "
                               "be unique (rows are matched by them)")
        floats = np.prod(spec.input_shape) + np.prod(spec.output_shape) + np.prod(spec.weight_shape)
        if 4 * floats > MAX_LAYER_BYTES:
            raise HarnessError(f"{where} ({layer.name}): its input, output and weights need "
                               f"{4 * floats / 2**30:.0f} GiB at batch 1 (at most "
                               f"{MAX_LAYER_BYTES // 2**30} GiB)")
        layers.append(layer)
    return layers
