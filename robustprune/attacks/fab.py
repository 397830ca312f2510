"""FAB, the fast adaptive boundary attack (Croce & Hein 2020, arXiv:1907.02044), from torchattacks.

With `targeted = true` it is FAB-T, run against the top `n_target_classes` (9) classes as in AutoAttack.
"""

from __future__ import annotations

import torchattacks

from robustprune.attacks.apgd import target_count
from robustprune.attacks.base import check_positive, register_attack
from robustprune.attacks.torchattacks_adapter import TorchattacksAttack


@register_attack("fab")
class FAB(TorchattacksAttack):
    defaults = {
        "steps": 100,
        "n_restarts": 1,
        "targeted": True,
        "n_target_classes": 9,
        "alpha_max": 0.1,
        "eta": 1.05,
        "beta": 0.9,
    }
    implementation = "torchattacks.FAB (targeted: the top n_target_classes classes, as AutoAttack's FAB-T)"

    @classmethod
    def is_targeted(cls, settings):
        return bool(settings["targeted"])

    def validate(self) -> None:
        check_positive(self, "steps", "n_restarts", "n_target_classes")

    def build(self, model, seed):
        attack = torchattacks.FAB(
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
        attack.n_target_classes = target_count(self)  # torchattacks: num_classes - 1; AutoAttack: 9
        return attack
