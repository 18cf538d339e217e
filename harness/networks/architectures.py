"""The catalog's networks as PyTorch modules, written here (torchvision is not a dependency):
standard architectures whose convolutions are the catalog's shapes, runnable end to end.

Stage tables come from harness.conv.layers, the one source of the shapes; the tests check
that importing each module gives exactly the catalog's layers."""

from __future__ import annotations

import torch
from torch import nn

from harness.conv.layers import (MOBILENETV2_HEAD, MOBILENETV2_STAGES, MOBILENETV2_STEM,
                                 RESNET50_EXPANSION, RESNET50_STAGES)
from harness.errors import HarnessError


def _conv_bn(cin, cout, kernel, stride=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act(inplace=True)) if act else nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        out = width * RESNET50_EXPANSION
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                         nn.BatchNorm2d(out))
                           if stride != 1 or cin != out else None)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 64
        for s, (width, blocks, stride) in enumerate(RESNET50_STAGES, start=1):
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(channels, width, stride if b == 0 else 1))
                channels = width * RESNET50_EXPANSION
            setattr(self, f"layer{s}", nn.Sequential(*stage))
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(channels, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        self.expand = _conv_bn(cin, hidden, 1, act=nn.ReLU6) if expansion != 1 else None
        self.depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        self.project = _conv_bn(hidden, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        features = [_conv_bn(3, MOBILENETV2_STEM, 3, 2, act=nn.ReLU6)]
        channels = MOBILENETV2_STEM
        for expansion, out, blocks, stride in MOBILENETV2_STAGES:
            for b in range(blocks):
                features.append(InvertedResidual(channels, out, stride if b == 0 else 1,
                                                 expansion))
                channels = out
        features.append(_conv_bn(channels, MOBILENETV2_HEAD, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(MOBILENETV2_HEAD, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class AlexNet(nn.Module):
    """CaffeNet, the paper's network: grouped conv2, conv4 and conv5, at 227 pixels."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.conv1, self.relu1 = nn.Conv2d(3, 96, 11, 4), relu()
        self.pool1 = nn.MaxPool2d(3, 2)
        self.conv2, self.relu2 = nn.Conv2d(96, 256, 5, padding=2, groups=2), relu()
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3, self.relu3 = nn.Conv2d(256, 384, 3, padding=1), relu()
        self.conv4, self.relu4 = nn.Conv2d(384, 384, 3, padding=1, groups=2), relu()
        self.conv5, self.relu5 = nn.Conv2d(384, 256, 3, padding=1, groups=2), relu()
        self.pool5 = nn.MaxPool2d(3, 2)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(256 * 6 * 6, 4096), relu(),
                                        nn.Linear(4096, 4096), relu(), nn.Linear(4096, classes))

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu5(self.conv5(self.relu4(self.conv4(self.relu3(self.conv3(x))))))
        return self.classifier(self.pool5(x))


class VGG16(nn.Module):
    STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

    def __init__(self, classes: int = 1000):
        super().__init__()
        channels = 3
        for s, (width, convs) in enumerate(self.STAGES, start=1):
            for i in range(1, convs + 1):
                setattr(self, f"conv{s}_{i}", nn.Conv2d(channels, width, 3, padding=1))
                channels = width
        self.relu, self.pool = nn.ReLU(inplace=True), nn.MaxPool2d(2)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True),
                                        nn.Linear(4096, 4096), nn.ReLU(True),
                                        nn.Linear(4096, classes))

    def forward(self, x):
        for s, (_width, convs) in enumerate(self.STAGES, start=1):
            for i in range(1, convs + 1):
                x = self.relu(getattr(self, f"conv{s}_{i}")(x))
            x = self.pool(x)
        return self.classifier(x)


class Inception(nn.Module):
    def __init__(self, cin, c1, r3, c3, r5, c5, pool_proj):
        super().__init__()
        self.branch1 = _conv_bn(cin, c1, 1)
        self.reduce3, self.conv3 = _conv_bn(cin, r3, 1), _conv_bn(r3, c3, 3)
        self.reduce5, self.conv5 = _conv_bn(cin, r5, 1), _conv_bn(r5, c5, 5)
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.pool_proj = _conv_bn(cin, pool_proj, 1)

    def forward(self, x):
        return torch.cat([self.branch1(x), self.conv3(self.reduce3(x)),
                          self.conv5(self.reduce5(x)), self.pool_proj(self.pool(x))], 1)


class GoogLeNet(nn.Module):
    # (name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection); a max pool before 4a, 5a
    MODULES = (("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64),
               ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64),
               ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64),
               ("4e", 256, 160, 320, 32, 128, 128), ("5a", 256, 160, 320, 32, 128, 128),
               ("5b", 384, 192, 384, 48, 128, 128))

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1), _conv_bn(64, 64, 1),
                                  _conv_bn(64, 192, 3), nn.MaxPool2d(3, 2, 1))
        blocks, channels = [], 192
        for name, c1, r3, c3, r5, c5, proj in self.MODULES:
            if name in ("4a", "5a"):
                blocks.append(nn.MaxPool2d(3, 2, 1))
            blocks.append(Inception(channels, c1, r3, c3, r5, c5, proj))
            channels = c1 + c3 + c5 + proj
        self.inception = nn.Sequential(*blocks)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.inception(self.stem(x))), 1))


# name -> (module class, input size)
ARCHITECTURES = {"alexnet": (AlexNet, 227), "vgg16": (VGG16, 224), "resnet50": (ResNet50, 224),
                 "googlenet": (GoogLeNet, 224), "mobilenetv2": (MobileNetV2, 224)}


def build(name: str, *, seed: int = 0, batch: int = 1, size: int | None = None):
    """The catalog network ``name`` in eval mode with seeded random weights (BatchNorm
    statistics randomised too, so that folding them is exercised), and an example input of
    ``size`` pixels square (default the catalog's)."""
    if name not in ARCHITECTURES:
        raise HarnessError(f"unknown network {name!r} (known: {', '.join(ARCHITECTURES)})")
    cls, default_size = ARCHITECTURES[name]
    size = size or default_size
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = cls()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.1, 0.1, generator=generator)
                module.running_mean.uniform_(-0.1, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    model.eval()
    example = torch.randn(batch, 3, size, size, generator=generator)
    return model, example
