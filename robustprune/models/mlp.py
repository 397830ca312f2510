"""Multilayer perceptron: the smallest baseline, works for any input shape."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from robustprune.models.layers import Normalize, check_args
from robustprune.models.registry import MODELS


@MODELS.register("mlp")
def mlp(
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> nn.Module:
    """flatten -> 256 -> ReLU -> 128 -> ReLU -> num_classes logits."""
    check_args("mlp", num_classes, input_shape, mean, std)
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(mean, std),
            flatten=nn.Flatten(),
            fc1=nn.Linear(math.prod(input_shape), 256),
            relu1=nn.ReLU(),
            fc2=nn.Linear(256, 128),
            relu2=nn.ReLU(),
            fc3=nn.Linear(128, num_classes),
        )
    )
