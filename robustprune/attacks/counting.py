"""Counts forward and backward passes (in examples) that an attack spends on a model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class CountingModel(nn.Module):
    """Transparent wrapper: same outputs, plus `n_forward` / `n_backward` counted in examples.

    The wrapper has no mode of its own: `training` reads the wrapped model's flag and `train()` / `eval()` change
    nothing. Attack libraries record the mode of the model they are given and restore it afterwards (torchattacks
    calls `.train()` when it saw `training=True`); a fresh wrapper would report train mode and the library would
    switch the user's model into it. Mode is the engine's business alone.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.n_forward = 0
        self.n_backward = 0

    @property  # type: ignore[override]
    def training(self) -> bool:
        inner = self.__dict__.get("_modules", {}).get("model")
        return bool(inner.training) if inner is not None else False

    @training.setter
    def training(self, value: bool) -> None:
        """Ignored: nn.Module.__init__ and train() assign it; the wrapped model's flag is the only one."""

    def train(self, mode: bool = True) -> CountingModel:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.n_forward += n
        if out.requires_grad:
            out.register_hook(self._make_backward_counter(n))
        return out

    def _make_backward_counter(self, n: int) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            self.n_backward += n

        return hook
