"""The reference network, and the layer shapes of any model."""

from __future__ import annotations

import torch
from torch import nn

from harness.conv.layers import LayerShape
from harness.errors import HarnessError
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
