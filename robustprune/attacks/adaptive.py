"""Adaptive attacks for randomized multi-head defenses (DIO; algorithms.md §2(f), evaluation.md §2.7).

`all_heads_pgd` runs PGD on the AVERAGE cross-entropy over all heads (the official DIO adaptive attack,
`adapt_attackers.py`), so the perturbation must fool every head at once instead of the one head a random forward pass
happened to use. Models without `all_head_logits` get expectation over transformation instead: the loss is averaged
over `eot_iter` forward passes of the model as given (Athalye et al. 2018). Linf and L2; the iterate with the highest
loss is returned per example (the engine then judges it over repeated passes of the randomized model).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robustprune.attacks.base import Attack, check_positive, register_attack
from robustprune.attacks.counting import CountingModel
from robustprune.attacks.pgd_core import pgd

LossFn = Callable[[torch.Tensor], torch.Tensor]  # x_adv -> per-example loss (N,)


def unwrap(model: nn.Module) -> nn.Module:
    """The real model behind the engine's CountingModel wrapper(s)."""
    while isinstance(model, CountingModel):
        model = model.model
    return model


def all_heads_loss(model: nn.Module, y: torch.Tensor, counter: nn.Module | None = None) -> LossFn:
    """Per-example mean over heads of CE(z_l, y); passes are booked on `counter` (bypassed by the direct call)."""

    def count_backward(n: int) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            counter.n_backward += n

        return hook

    def loss(x: torch.Tensor) -> torch.Tensor:
        logits = model.all_head_logits(x)  # (L, N, C)
        if isinstance(counter, CountingModel):
            counter.n_forward += len(x)
            if logits.requires_grad:
                logits.register_hook(count_backward(len(x)))
        ce = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(len(logits)), reduction="none")
        return ce.view(len(logits), -1).mean(dim=0)

    return loss


def eot_loss(model: nn.Module, y: torch.Tensor, eot_iter: int) -> LossFn:
    def loss(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([nn.functional.cross_entropy(model(x), y, reduction="none") for _ in range(eot_iter)]).mean(
            dim=0
        )

    return loss


@register_attack("all_heads_pgd")
class AllHeadsPGD(Attack):
    """PGD on the mean CE over all heads (multi-head models), else EOT-PGD over `eot_iter` forward passes."""

    defaults = {"steps": 40, "rel_step": 0.0625, "eot_iter": 10, "random_start": True}
    implementation = (
        "robustprune all_heads_pgd: PGD on the mean cross-entropy over all heads via all_head_logits "
        "(DIO adaptive attack); EOT over eot_iter passes for models without heads"
    )

    def validate(self) -> None:
        check_positive(self, "steps", "rel_step", "eot_iter")

    def perturb_batch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int, batch_size: int
    ) -> torch.Tensor:
        eps = self.threat.eps
        if eps == 0 or len(x) == 0:
            return x.clone()
        inner = unwrap(model)
        if hasattr(inner, "all_head_logits"):
            loss_fn = all_heads_loss(inner, y, model)
        else:
            loss_fn = eot_loss(model, y, int(self.settings["eot_iter"]))
        generator = torch.Generator().manual_seed(seed)
        x_adv, trace = pgd(
            lambda z: (loss_fn(z), None),  # a randomized model: one pass proves nothing, keep the highest loss
            x,
            norm=self.threat.norm,
            eps=eps,
            alpha=self.step_size(),
            steps=int(self.settings["steps"]),
            random_start=bool(self.settings["random_start"]),
            generator=generator,
        )
        self.record_trace(trace)
        return x_adv


@register_attack("adaptive_eot_pgd")
class AdaptiveEOTPGD(AllHeadsPGD):
    """The same adaptive PGD, named for the case `score` adds it: any randomized model (S2), Linf and L2."""

    implementation = (
        "robustprune adaptive_eot_pgd: PGD on the cross-entropy averaged over eot_iter forward passes "
        "(expectation over transformation); on the mean over all heads for multi-head models"
    )
