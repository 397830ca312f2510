"""`pgd_at`: Madry et al.'s PGD adversarial training (arXiv 1706.06083; algorithms.md §3.1).

min_θ E[max_{δ∈B_ε} CE(f_θ(x+δ), y)]: every batch is replaced by its L∞ PGD adversarial examples (uniform random
start, `steps` signed steps of size `alpha`, projection onto the ε-ball and the [0,1] box), then one optimizer
step on their cross-entropy, with the model in train mode.

Crafting mode (`craft_mode`): "train" by default, i.e. the model as is during training, which is what the
reference code does (MadryLab/cifar10_challenge crafts with the training graph). "eval" crafts in eval mode (the
TRADES convention). The two differ only for models with BatchNorm/Dropout; digits_cnn has neither.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from robustprune.data import Dataset
from robustprune.defenses.base import register_defense
from robustprune.defenses.common import LossDefense
from robustprune.defenses.perturb import pgd_linf
from robustprune.defenses.train_loop import Loss, StepContext
from robustprune.errors import UsageError
from robustprune.models.modes import eval_mode


@register_defense("pgd_at")
class PGDAT(LossDefense):
    # Digits defaults; CIFAR-10 in the paper/code: eps 8/255, alpha 2/255, steps 7 (paper) / 10 (code).
    defaults = {"eps": 0.1, "alpha": 0.025, "steps": 7, "random_start": True, "craft_mode": "train"}

    def validate(self) -> None:
        self._check_eps()
        self._check_positive("alpha", "steps")
        if self.settings["craft_mode"] not in ("train", "eval"):
            raise UsageError(f"recipe {self.recipe.name!r} [settings] craft_mode must be train or eval")

    def make_loss(self, train: Dataset) -> Loss:
        eps, alpha, steps = float(self.settings["eps"]), float(self.settings["alpha"]), int(self.settings["steps"])
        random_start, craft_eval = bool(self.settings["random_start"]), self.settings["craft_mode"] == "eval"

        def pgd_at_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
            with eval_mode(model) if craft_eval else contextlib.nullcontext():
                x_adv = pgd_linf(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
            return nn.functional.cross_entropy(model(x_adv), y)

        return pgd_at_loss
