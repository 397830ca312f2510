"""Layers and argument checks shared by the architecture families."""

from __future__ import annotations

import torch
from torch import nn

from robustprune.errors import UsageError


class Normalize(nn.Module):
    """(x - mean) / std per channel, so models take [0,1] pixels and every epsilon is in pixel units.

    The buffers are non-persistent: normalization comes from the dataset named in code (like the architecture),
    so a checkpoint holds only learned tensors and its keys are the same with or without mean/std.
    """

    def __init__(self, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.identity = mean is None and std is None
        if mean is not None and std is not None and len(mean) != len(std):
            raise UsageError(f"mean has {len(mean)} values but std has {len(std)}; give one value per channel each")
        channels = len(mean) if mean is not None else len(std) if std is not None else 1
        mean_t = torch.tensor(mean if mean is not None else (0.0,) * channels, dtype=torch.float32)
        std_t = torch.tensor(std if std is not None else (1.0,) * channels, dtype=torch.float32)
        if not torch.isfinite(mean_t).all() or not torch.isfinite(std_t).all() or (std_t <= 0).any():
            raise UsageError(f"normalization needs finite mean and positive std, got mean={mean} std={std}")
        # Buffers even for the identity case: TorchScript and .to(device) then see one fixed layout.
        self.register_buffer("mean", mean_t.view(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, channels, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        if self.identity:
            return "identity"
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def check_args(
    model: str,
    num_classes: int,
    input_shape: tuple[int, ...],
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    min_hw: int = 1,
) -> tuple[int, int, int]:
    """Validate the common factory arguments and return input_shape as (C, H, W)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UsageError(f"model {model} needs num_classes >= 2, got {num_classes!r}; check the dataset's labels")
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise UsageError(f"model {model} needs input_shape as three positive ints (C, H, W), got {input_shape!r}")
    c, h, w = shape
    if h < min_hw or w < min_hw:
        raise UsageError(f"model {model} needs inputs of at least {min_hw}x{min_hw} pixels, got {h}x{w}")
    for label, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != c:
            raise UsageError(f"model {model}: {label} has {len(values)} values but the input has {c} channels")
    return c, h, w
