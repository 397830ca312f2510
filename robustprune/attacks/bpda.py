"""BPDA (Athalye et al. 2018, arXiv:1802.00420): APGD through non-differentiable layers approximated by the
identity on the backward pass (a straight-through estimator).

The escalation for a model whose input gradient is zero because some layer (input quantization, rounding, a
hard threshold) has a zero derivative almost everywhere. The health checks locate such layers (a module whose
output receives a gradient but whose input receives none, with the same shape in and out); this attack makes each
of them `input + (output - input).detach()` during the attack, so the forward pass is unchanged and the gradient
flows as if the layer were the identity. Returned examples are judged on the model as given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from robustprune.attacks.base import Attack, check_positive, register_attack
from robustprune.attacks.counting import CountingModel
from robustprune.attacks.rescaled import apgd_ce


@contextlib.contextmanager
def straight_through(model: nn.Module, names: list[str]) -> Iterator[None]:
    """Inside the block, the named modules pass the gradient of their output straight to their input."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        inp = args[0] if args else None
        if not isinstance(inp, torch.Tensor) or not isinstance(output, torch.Tensor) or inp.shape != output.shape:
            return output
        return inp + (output - inp).detach()

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(hook) for name in names if name in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@register_attack("bpda_apgd")
class BPDAAPGD(Attack):
    defaults = {"steps": 100, "restarts": 2, "modules": ""}
    implementation = (
        "torchattacks.APGD (CE, AutoAttack's step-size schedule) with the named non-differentiable modules "
        "straight-through (BPDA)"
    )

    def validate(self) -> None:
        check_positive(self, "steps", "restarts")

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        inner = model.model if isinstance(model, CountingModel) else model
        names = [n for n in str(self.settings["modules"]).split(",") if n]
        with straight_through(inner, names):
            return apgd_ce(self, model, x, y, seed)
