"""BPDA (Athalye et al. 2018, arXiv:1802.00420): APGD through non-differentiable steps approximated by the
identity on the backward pass (a straight-through estimator).

The escalation for a model whose input gradient is zero, missing or uninformative because some step (input
quantization, rounding, a hard threshold, a detach, a no-grad region, a masking custom Function) stops it. Two
kinds of step are bridged: modules the health checks located (a module whose output receives a gradient but whose
input receives none, same shape in and out: `input + (output - input).detach()` on its output), and, with `ops`
(the default), every gradient-stopping operation of the forward pass wherever it hides (attacks/gradient_stops.py).
The forward pass is unchanged; returned examples are judged on the model as given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from robustprune.attacks.base import Attack, check_positive, register_attack
from robustprune.attacks.counting import CountingModel
from robustprune.attacks.gradient_stops import straight_through_ops
from robustprune.attacks.rescaled import apgd_ce


@contextlib.contextmanager
def bpda_view(model: nn.Module, modules: list[str], ops: bool = True) -> Iterator[nn.Module]:
    """The model as BPDA attacks it: the named modules and (with `ops`) every gradient-stopping operation
    straight-through."""
    with straight_through(model, modules), straight_through_ops(model) if ops else contextlib.nullcontext():
        yield model


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
    defaults = {"steps": 100, "restarts": 2, "modules": "", "ops": True}
    implementation = (
        "torchattacks.APGD (CE, AutoAttack's step-size schedule) with the named non-differentiable modules and "
        "(ops) every gradient-stopping operation of the forward pass straight-through (BPDA)"
    )

    def validate(self) -> None:
        check_positive(self, "steps", "restarts")

    def skip_reason(self) -> str | None:
        """Runs where the straight-through view gives a gradient, even when the model as given gives none."""
        return None if self.context.bridged else super().skip_reason()

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        inner = model.model if isinstance(model, CountingModel) else model
        names = [n for n in str(self.settings["modules"]).split(",") if n]
        with bpda_view(inner, names, bool(self.settings["ops"])):
            return apgd_ce(self, model, x, y, seed)
