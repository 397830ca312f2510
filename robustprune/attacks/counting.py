"""Counts forward and backward passes (in examples) that an attack spends on a model."""

from __future__ import annotations

import torch
from torch import nn


class CountingModel(nn.Module):
    """Transparent wrapper: same outputs, plus `n_forward` / `n_backward` counted in examples."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.n_forward = 0
        self.n_backward = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.n_forward += n
        if out.requires_grad:
            out.register_hook(self._make_backward_counter(n))
        return out

    def _make_backward_counter(self, n: int):
        def hook(grad: torch.Tensor) -> None:
            self.n_backward += n

        return hook
