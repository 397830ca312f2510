"""`fgsm_rs`: Wong, Rice & Kolter's fast adversarial training, FGSM with random start (arXiv 2001.03994;
algorithms.md §3.3).

Per batch: δ0 ~ U(−ε, ε) (clipped into [0,1]), one signed gradient step of size α = `alpha_factor`·ε (1.25ε in the
paper), projection onto the ε-ball and the box, then one optimizer step on CE(f(x+δ), y). The model crafts as it
trains (train mode), as in the reference code; the recipe uses the cyclic learning rate of the paper.

Catastrophic-overfitting guard (the reference's `--early-stop`): after every epoch, PGD (`guard_steps` steps of
ε/4, random start) runs on a fixed batch of `guard_size` training examples drawn with the run's seed (the
reference uses a training batch too). If its accuracy falls by more than `guard_drop` (0.2) below the previous
epoch's, training stops and the previous epoch's weights are restored; the log records it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from robustprune.data import Dataset
from robustprune.defenses.base import register_defense
from robustprune.defenses.common import LossDefense
from robustprune.defenses.perturb import fgsm_rs, pgd_linf
from robustprune.defenses.train_loop import Callback, Loss, StepContext, accuracy
from robustprune.models.modes import eval_mode


class CatastrophicOverfittingGuard(Callback):
    """Stop and restore the previous epoch's weights when `probe(model)` (a robust accuracy) drops by more than
    `max_drop` from one epoch to the next. The first epoch only sets the reference."""

    def __init__(self, probe: Callable[[nn.Module], float], max_drop: float = 0.2) -> None:
        self.probe = probe
        self.max_drop = max_drop
        self.previous: float | None = None
        self.snapshot: dict[str, torch.Tensor] | None = None
        self.snapshot_epoch = 0
        self.triggered = False

    def on_train_begin(self, ctx: StepContext) -> None:
        self.previous, self.triggered = None, False
        self.snapshot, self.snapshot_epoch = copy.deepcopy(ctx.model.state_dict()), 0

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any]:
        acc = float(self.probe(ctx.model))
        entry: dict[str, Any] = {"guard_pgd_acc": acc}
        if self.previous is not None and acc < self.previous - self.max_drop:
            assert self.snapshot is not None
            # state_dict carries weight_orig and weight_mask, so masks come back with the weights
            ctx.model.load_state_dict(self.snapshot)
            self.triggered = True
            entry.update(
                {
                    "catastrophic_overfitting": True,
                    "guard_previous_acc": self.previous,
                    "restored_epoch": self.snapshot_epoch,
                }
            )
            return entry
        self.previous = acc
        self.snapshot, self.snapshot_epoch = copy.deepcopy(ctx.model.state_dict()), ctx.epoch + 1
        return entry

    def should_stop(self) -> bool:
        return self.triggered


@register_defense("fgsm_rs")
class FGSMRS(LossDefense):
    # Digits defaults; CIFAR-10 code: eps 8/255, alpha 10/255 (1.25 eps), PGD-5 step 2/255 for the guard.
    defaults = {"eps": 0.1, "alpha_factor": 1.25, "guard": True, "guard_drop": 0.2, "guard_steps": 5, "guard_size": 128}

    def validate(self) -> None:
        self._check_eps()
        self._check_positive("alpha_factor", "guard_drop", "guard_steps", "guard_size")

    def make_loss(self, train: Dataset) -> Loss:
        eps = float(self.settings["eps"])
        alpha = float(self.settings["alpha_factor"]) * eps

        def fgsm_rs_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
            x_adv = fgsm_rs(model, x, y, eps=eps, alpha=alpha)
            return nn.functional.cross_entropy(model(x_adv), y)

        return fgsm_rs_loss

    def make_callbacks(self, train: Dataset, val: Dataset, seed: int) -> Sequence[Callback]:
        if not self.settings["guard"]:
            return ()
        eps, steps = float(self.settings["eps"]), int(self.settings["guard_steps"])
        size = min(int(self.settings["guard_size"]), len(train))
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:size]
        x, y = train.x[idx], train.y[idx]

        def probe(model: nn.Module) -> float:
            with eval_mode(model):  # measured like any evaluation; digits_cnn has no BatchNorm, so no change there
                x_adv = pgd_linf(model, x, y, eps=eps, alpha=eps / 4, steps=steps, random_start=True)
            return accuracy(model, x_adv, y)

        return (CatastrophicOverfittingGuard(probe, float(self.settings["guard_drop"])),)
