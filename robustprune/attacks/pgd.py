"""PGD with random start (Madry et al. 2018, arXiv:1706.06083): torchattacks.PGD for Linf, PGDL2 for L2.

The step is stated relative to eps (`rel_step`, Madry's 2.5 * eps / steps by default) so that one battery file
serves every eps.
"""

from __future__ import annotations

import torchattacks

from robustprune.attacks.base import check_positive, register_attack
from robustprune.attacks.torchattacks_adapter import TorchattacksAttack


@register_attack("pgd")
class PGD(TorchattacksAttack):
    defaults = {"steps": 40, "rel_step": 0.0625, "random_start": True}
    implementation = "torchattacks.PGD (Linf) / torchattacks.PGDL2 (L2)"

    def validate(self) -> None:
        check_positive(self, "steps", "rel_step")

    def build(self, model, seed):
        cls = torchattacks.PGD if self.threat.norm == "Linf" else torchattacks.PGDL2
        return cls(
            model,
            eps=self.threat.eps,
            alpha=self.step_size(),
            steps=int(self.settings["steps"]),
            random_start=bool(self.settings["random_start"]),
        )


@register_attack("eot_pgd")
class EOTPGD(TorchattacksAttack):
    """PGD with expectation over transformation (Athalye et al. 2018, arXiv:1802.00420) for randomized models."""

    norms = ("Linf",)
    defaults = {"steps": 40, "rel_step": 0.0625, "eot_iter": 10, "random_start": True}
    implementation = "torchattacks.EOTPGD"

    def validate(self) -> None:
        check_positive(self, "steps", "rel_step", "eot_iter")

    def build(self, model, seed):
        return torchattacks.EOTPGD(
            model,
            eps=self.threat.eps,
            alpha=self.step_size(),
            steps=int(self.settings["steps"]),
            eot_iter=int(self.settings["eot_iter"]),
            random_start=bool(self.settings["random_start"]),
        )
