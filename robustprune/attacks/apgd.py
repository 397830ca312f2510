"""Auto-PGD (Croce & Hein 2020, arXiv:2003.01690) from torchattacks, configured like AutoAttack's components.

`apgd` is the untargeted attack on the CE or DLR loss; `apgd_t` is targeted APGD on the DLR loss against the
top `n_target_classes` (9, at most num_classes - 1) classes, as AutoAttack's APGD-T. These are torchattacks' ports, not the reference
AutoAttack: batteries name them apgd-ce / apgd-t, never "autoattack".
"""

from __future__ import annotations

import torchattacks

from robustprune.attacks.base import Attack, check_choice, check_positive, register_attack
from robustprune.attacks.torchattacks_adapter import TorchattacksAttack


@register_attack("apgd")
class APGD(TorchattacksAttack):
    defaults = {"steps": 100, "n_restarts": 1, "loss": "ce", "rho": 0.75}
    implementation = "torchattacks.APGD"

    def validate(self) -> None:
        check_positive(self, "steps", "n_restarts")
        check_choice(self, "loss", ("ce", "dlr"))

    def required_classes(self) -> int:
        return 3 if self.settings["loss"] == "dlr" else 2  # DLR reads the third-largest logit

    def build(self, model, seed):
        return torchattacks.APGD(
            model,
            norm=self.threat.norm,
            eps=self.threat.eps,
            steps=int(self.settings["steps"]),
            n_restarts=int(self.settings["n_restarts"]),
            seed=seed,
            loss=str(self.settings["loss"]),
            rho=float(self.settings["rho"]),
        )


@register_attack("apgd_t")
class APGDT(TorchattacksAttack):
    defaults = {"steps": 100, "n_restarts": 1, "rho": 0.75, "n_target_classes": 9}
    implementation = "torchattacks.APGDT (targeted DLR on the top n_target_classes classes, as AutoAttack)"
    min_classes = 4  # targeted DLR reads the fourth-largest logit

    @classmethod
    def is_targeted(cls, settings):
        return True

    def validate(self) -> None:
        check_positive(self, "steps", "n_restarts", "n_target_classes")

    def build(self, model, seed):
        attack = torchattacks.APGDT(
            model,
            norm=self.threat.norm,
            eps=self.threat.eps,
            steps=int(self.settings["steps"]),
            n_restarts=int(self.settings["n_restarts"]),
            seed=seed,
            rho=float(self.settings["rho"]),
            n_classes=self.num_classes,
        )
        # torchattacks targets all num_classes - 1 other classes; AutoAttack the top 9 (fewer when there are fewer).
        attack.n_target_classes = target_count(self)
        return attack


def target_count(attack: Attack) -> int:
    """Targets actually attacked: the setting, capped at the num_classes - 1 classes there are to target."""
    return min(int(attack.settings["n_target_classes"]), attack.num_classes - 1)
