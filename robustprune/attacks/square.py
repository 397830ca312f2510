"""Square attack, score-based and gradient-free (Andriushchenko et al. 2020, arXiv:1912.00049), from torchattacks.

A gradient-free attack in the battery catches models whose gradients are masked.
"""

from __future__ import annotations

import torchattacks

from robustprune.attacks.base import check_positive, register_attack
from robustprune.attacks.torchattacks_adapter import TorchattacksAttack


@register_attack("square")
class Square(TorchattacksAttack):
    uses_gradients = False
    defaults = {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8}
    implementation = "torchattacks.Square (margin loss)"

    def validate(self) -> None:
        check_positive(self, "n_queries", "n_restarts", "p_init")

    def build(self, model, seed):
        return torchattacks.Square(
            model,
            norm=self.threat.norm,
            eps=self.threat.eps,
            n_queries=int(self.settings["n_queries"]),
            n_restarts=int(self.settings["n_restarts"]),
            p_init=float(self.settings["p_init"]),
            loss="margin",
            resc_schedule=False,  # AutoAttack's setting (pyautoattack.AutoAttack builds Square so)
            seed=seed,
        )
