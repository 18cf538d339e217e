"""The reference network and the layer shapes read from any model with forward hooks."""

from __future__ import annotations

import torch
from torch import nn

from harness.conv.layers import LayerShape


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
    """Each Conv2d's shape as it runs on ``sample`` (one forward pass with hooks); layers the
    catalog cannot express (non-square kernels, strides or padding) are left out."""
    shapes: dict[str, LayerShape] = {}
    handles = []

    def hook(name, conv):
        def record(_module, inputs, _output):
            x = inputs[0]
            k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
            if isinstance(p, str) or len({k[0], k[1]}) > 1 or s[0] != s[1] or p[0] != p[1] \
                    or d[0] != d[1]:
                return
            shapes[name] = LayerShape(network, name, conv.in_channels, x.shape[2], x.shape[3],
                                      conv.out_channels, k[0], s[0], p[0], d[0], conv.groups)
        return record
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(hook(name, module)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return shapes
