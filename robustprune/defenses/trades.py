"""`trades`: Zhang et al.'s TRADES (arXiv 1901.08573; algorithms.md §3.2).

L = CE(f(x), y) + β · KL(p(x) ‖ p(x')) / batch, where x' maximises the KL in the L∞ ε-ball: start at
x + 0.001·N(0, I), `steps` signed ascent steps of size `alpha`, each projected onto the ball and the [0,1] box.
As in the reference code (yaodongyu/TRADES), the model is in eval mode while x' is crafted and back in train mode
for the update, the KL is summed over the batch and divided by the batch size, and gradients flow through both
p(x) and p(x').
"""

from __future__ import annotations

import torch
from torch import nn

from robustprune.data import Dataset
from robustprune.defenses.base import register_defense
from robustprune.defenses.common import LossDefense
from robustprune.defenses.perturb import trades_kl
from robustprune.defenses.train_loop import Loss, StepContext
from robustprune.errors import UsageError
from robustprune.models.modes import eval_mode


@register_defense("trades")
class TRADES(LossDefense):
    # Digits defaults; CIFAR-10 code: beta 6.0, eps 0.031, step 0.007, steps 10.
    defaults = {"beta": 6.0, "eps": 0.1, "alpha": 0.025, "steps": 7}

    def validate(self) -> None:
        self._check_eps()
        self._check_positive("alpha", "steps")
        if float(self.settings["beta"]) < 0:
            raise UsageError(f"recipe {self.recipe.name!r} [settings] beta must be >= 0, got {self.settings['beta']}")

    def make_loss(self, train: Dataset) -> Loss:
        beta, eps = float(self.settings["beta"]), float(self.settings["eps"])
        alpha, steps = float(self.settings["alpha"]), int(self.settings["steps"])

        def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
            with eval_mode(model):
                x_adv = trades_kl(model, x, eps=eps, alpha=alpha, steps=steps)
            logits, logits_adv = model(x), model(x_adv)
            robust = nn.functional.kl_div(
                torch.log_softmax(logits_adv, dim=1), torch.softmax(logits, dim=1), reduction="sum"
            ) / len(x)
            return nn.functional.cross_entropy(logits, y) + beta * robust

        return trades_loss
