"""The networks GSL trains on 28x28 grey images, and the layer shapes of any model."""

from __future__ import annotations

import torch
from torch import nn

from harness.conv.layers import LayerShape
from harness.errors import HarnessError
from harness.gsl import settings
from harness.networks.architectures import Bottleneck
from harness.networks.torch_graph import import_torch


class ReferenceNet(nn.Module):
    """VGG-style classifier for 28x28 grey images: convolutions of 32 to 128 channels at 28,
    14 and 7 pixels (big enough for sparse convolution to matter), trainable from scratch on
    two cores in minutes."""

    def __init__(self, classes: int = 10, width: int = 32, in_channels: int = 1):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(
            *block(in_channels, c1), *block(c1, c1), nn.MaxPool2d(2),
            *block(c1, c2), *block(c2, c2), nn.MaxPool2d(2),
            *block(c2, c3), *block(c3, c3), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c3, 128), nn.ReLU(inplace=True),
                                        nn.Linear(128, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class BottleneckNet(nn.Module):
    """ResNet-style classifier built from the catalog's bottleneck block (1x1 reduce, 3x3,
    1x1 expand, a 1x1 projection beside it): one block at each of 28, 14 and 7 pixels, the
    later two entered with stride 2. Its 1x1, strided and 3x3 convolutions have different
    sweet spots, which gives guided pruning room to choose."""

    def __init__(self, classes: int = 10, width: int = 32, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks, channels = [], width
        for scale, stride in ((1, 1), (2, 2), (4, 2)):
            block = Bottleneck(channels, width * scale // 2, stride)
            blocks.append(block)
            channels = block.conv3.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


NETWORKS = dict(zip(settings.NETWORKS, (ReferenceNet, BottleneckNet), strict=True))


def build_network(name: str, classes: int, width: int, in_channels: int) -> nn.Module:
    try:
        return NETWORKS[name](classes=classes, width=width, in_channels=in_channels)
    except KeyError:
        raise HarnessError(f"unknown network {name!r} (known: {', '.join(NETWORKS)})") from None


def conv_shapes(model: nn.Module, sample: torch.Tensor, network: str = "model") -> dict[str, LayerShape]:
    """Each Conv2d's shape as it runs on ``sample``, read by the model importer
    (harness.networks); layers the catalog cannot express (non-square kernels, strides or
    padding) are left out."""
    convs, _ = import_torch(model, sample[:1])
    shapes = {}
    for conv in convs:
        try:
            shapes[conv.name] = conv.layer_shape(network)
        except HarnessError:
            continue
    return shapes
