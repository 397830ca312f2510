"""Small CNN sized for the embedded 8x8 digits; no BatchNorm so train and eval modes compute the same thing."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from robustprune.models.layers import Normalize, check_args
from robustprune.models.registry import MODELS


@MODELS.register("digits_cnn")
def digits_cnn(
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> nn.Module:
    """conv32 -> conv64 -> maxpool -> 64x4x4 -> 128 -> logits; other input sizes are pooled to 4x4."""
    c, h, w = check_args("digits_cnn", num_classes, input_shape, mean, std, min_hw=2)
    # 8x8 inputs are 4x4 after the max-pool already; only other sizes need the adaptive pool, and keeping it
    # a named slot (Identity otherwise) keeps state_dict keys the same for every input size.
    pool: nn.Module = nn.Identity() if (h // 2, w // 2) == (4, 4) else nn.AdaptiveAvgPool2d((4, 4))
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(mean, std),
            features=nn.Sequential(
                nn.Conv2d(c, 32, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ),
            pool=pool,
            flatten=nn.Flatten(),
            classifier=nn.Sequential(nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes)),
        )
    )
