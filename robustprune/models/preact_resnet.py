"""PreAct-ResNet-18 (He et al. 2016, identity mappings) for 32x32 inputs.

Module names follow the fast-AT code of Wong et al. 2020 / Rice et al. 2020 (conv1, layer1..4, bn, linear),
so their state_dicts load here; Normalize holds no persistent tensors and adds no keys.
"""

from __future__ import annotations

import torch
from torch import nn

from robustprune.models.layers import Normalize, check_args
from robustprune.models.registry import MODELS


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        # ReLU modules (not F.relu) so dead-neuron metrics can hook every activation.
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.has_shortcut = stride != 1 or in_planes != planes
        if self.has_shortcut:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        # The projection shortcut takes the pre-activated input, the identity shortcut the raw one (He et al.).
        shortcut = self.shortcut(out) if self.has_shortcut else x
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(
        self,
        num_blocks: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int,
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)  # first child, by contract
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.bn = nn.BatchNorm2d(512)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)  # = avg_pool2d(4) at 32x32, also fits other sizes
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.pool(self.relu(self.bn(out)))
        return self.linear(torch.flatten(out, 1))


@MODELS.register("preact_resnet18")
def preact_resnet18(
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> nn.Module:
    c, _, _ = check_args("preact_resnet18", num_classes, input_shape, mean, std, min_hw=8)
    return PreActResNet((2, 2, 2, 2), num_classes, c, mean, std)
