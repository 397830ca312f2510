"""VGG with BatchNorm for 32x32 inputs (the CIFAR variant: five pooling stages, one linear classifier)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from robustprune.errors import UsageError
from robustprune.models.layers import Normalize, check_args
from robustprune.models.registry import MODELS

# Channel plan at width 64 ("M" = 2x2 max-pool), Simonyan & Zisserman configuration A.
VGG11_PLAN: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def make_vgg(
    name: str,
    plan: tuple[int | str, ...],
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    width: int,
) -> nn.Module:
    pools = sum(1 for p in plan if p == "M")
    c, _, _ = check_args(name, num_classes, input_shape, mean, std, min_hw=2**pools)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise UsageError(f"model {name} needs width as a positive int (64 is the standard VGG), got {width!r}")
    layers: list[nn.Module] = []
    channels = c
    for p in plan:
        if p == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        out = max(1, int(p) * width // 64)
        layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        channels = out
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(mean, std),
            features=nn.Sequential(*layers),
            pool=nn.AdaptiveAvgPool2d(1),  # 1x1 already at 32x32; lets larger inputs through unchanged
            flatten=nn.Flatten(),
            classifier=nn.Linear(channels, num_classes),
        )
    )


@MODELS.register("vgg11")
def vgg11(
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    width: int = 64,
) -> nn.Module:
    """VGG-11 with BatchNorm; `width` scales every layer (64 = standard 64..512 channels)."""
    return make_vgg("vgg11", VGG11_PLAN, num_classes, input_shape, mean, std, width)
