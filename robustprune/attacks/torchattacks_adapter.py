"""Shared shape of the adapters over torchattacks: build the library object per batch, call it, return x_adv."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from robustprune.attacks.base import Attack


class TorchattacksAttack(Attack):
    library: ClassVar[str] = "torchattacks"

    @abstractmethod
    def build(self, model: nn.Module, seed: int) -> Any:
        """The configured torchattacks object for `model`."""

    def perturb_batch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int, batch_size: int
    ) -> torch.Tensor:
        attack = self.build(model, seed)
        return attack(x, y).detach()
