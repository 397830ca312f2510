"""FGSM: one signed-gradient step of size eps (Goodfellow et al. 2015, arXiv:1412.6572). Linf only."""

from __future__ import annotations

import torchattacks

from robustprune.attacks.base import register_attack
from robustprune.attacks.torchattacks_adapter import TorchattacksAttack


@register_attack("fgsm")
class FGSM(TorchattacksAttack):
    norms = ("Linf",)
    implementation = "torchattacks.FGSM"

    def build(self, model, seed):
        return torchattacks.FGSM(model, eps=self.threat.eps)
