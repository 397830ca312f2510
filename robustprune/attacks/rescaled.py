"""APGD on rescaled logits, the escalation for outputs that starve gradient attacks of a signal.

A model whose outputs are probabilities (a final softmax, S1) or saturated logits (x1e4, S22) gives a
cross-entropy whose gradient is exactly zero in float32 for every confidently classified example, so gradient
attacks stand still. Attacking the logarithm of the probabilities, or the logits divided by a temperature that
brings the largest to about 10, restores the gradient without changing the model's decisions (argmax is
unchanged); the engine judges every returned example on the model as given.
"""

from __future__ import annotations

import torch
import torchattacks
from torch import nn

from robustprune.attacks.base import Attack, check_choice, check_positive, register_attack

TARGET_SCALE = 10.0  # rescaled logits span about this much


class Rescaled(nn.Module):
    """`model`'s outputs as logits an attack can climb: log of probabilities, or logits / temperature."""

    def __init__(self, model: nn.Module, mode: str, temperature: float = 1.0) -> None:
        super().__init__()
        self.model, self.mode, self.temperature = model, mode, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.mode == "log":
            return torch.log(out.double().clamp_min(1e-300)).to(out.dtype)
        return out / self.temperature


def choose_rescaling(model: nn.Module, x: torch.Tensor, mode: str) -> tuple[str, float]:
    """("log", 1) for probability outputs, else ("temperature", T) with T bringing max |logit| to about 10."""
    with torch.no_grad():
        out = model(x).double()
    if mode == "log" or (
        mode == "auto"
        and out.min() >= 0
        and torch.allclose(out.sum(dim=1), torch.ones(len(out), dtype=out.dtype, device=out.device), atol=1e-4)
    ):
        return "log", 1.0
    return "temperature", max(1.0, float(out.abs().max()) / TARGET_SCALE)


@register_attack("rescaled_apgd")
class RescaledAPGD(Attack):
    defaults = {"steps": 100, "restarts": 1, "mode": "auto"}
    implementation = (
        "torchattacks.APGD (CE, AutoAttack's step-size schedule) on log-probabilities or temperature-scaled logits"
    )

    def validate(self) -> None:
        check_positive(self, "steps", "restarts")
        check_choice(self, "mode", ("auto", "log", "temperature"))

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        mode, temperature = choose_rescaling(model, x, str(self.settings["mode"]))
        note = f"attacked {'log-probabilities' if mode == 'log' else f'logits / {temperature:.4g}'}"
        if note not in self.notes:
            self.notes.append(note)
        return apgd_ce(self, Rescaled(model, mode, temperature).eval(), x, y, seed)


def apgd_ce(attack: Attack, view: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """APGD-CE (AutoAttack's step-size schedule, its best point kept) on `view`, a differentiable stand-in for the
    model; EOT over 20 passes on a randomized model. The engine judges the result on the model as given."""
    apgd = torchattacks.APGD(
        view,
        norm=attack.threat.norm,
        eps=attack.threat.eps,
        steps=int(attack.settings["steps"]),
        n_restarts=int(attack.settings["restarts"]),
        seed=seed,
        loss="ce",
        eot_iter=20 if attack.context.randomized else 1,
    )
    return apgd(x, y).detach()
