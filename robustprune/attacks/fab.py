"""FAB, the fast adaptive boundary attack (Croce & Hein 2020, arXiv:1907.02044), from torchattacks.

With `targeted = true` it is FAB-T, run against the top (num_classes - 1) classes as in AutoAttack.
"""

from __future__ import annotations

import torchattacks

from robustprune.attacks.base import check_positive, register_attack
from robustprune.attacks.torchattacks_adapter import TorchattacksAttack


@register_attack("fab")
class FAB(TorchattacksAttack):
    defaults = {"steps": 100, "n_restarts": 1, "targeted": True, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}
    implementation = "torchattacks.FAB"

    def validate(self) -> None:
        check_positive(self, "steps", "n_restarts")

    def build(self, model, seed):
        return torchattacks.FAB(
            model,
            norm=self.threat.norm,
            eps=self.threat.eps,
            steps=int(self.settings["steps"]),
            n_restarts=int(self.settings["n_restarts"]),
            alpha_max=float(self.settings["alpha_max"]),
            eta=float(self.settings["eta"]),
            beta=float(self.settings["beta"]),
            seed=seed,
            multi_targeted=bool(self.settings["targeted"]),
            n_classes=self.num_classes,
        )
