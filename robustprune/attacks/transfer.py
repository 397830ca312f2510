"""Transfer from the dense parent (evaluation.md S9), the attack only a pruning tool can run naturally.

Adversarial examples are crafted by PGD on the parent the pruned model came from and tried on the pruned model:
a pruned model that only looks robust because its own gradients are masked still falls to perturbations that
fool its parent, as RobustBench's transfer evaluations showed (71.28 -> 64.20 for one entry). It needs no gradient
of the scored model.
"""

from __future__ import annotations

from robustprune.attacks.base import Attack, check_positive, register_attack
from robustprune.attacks.counting import CountingModel
from robustprune.attacks.pgd_core import cross_entropy_objective, restarted_pgd


@register_attack("transfer_pgd")
class TransferPGD(Attack):
    uses_gradients = False  # of the scored model: the gradient is the parent's
    defaults = {"steps": 100, "rel_step": 0.025, "restarts": 1}
    implementation = "robustprune transfer_pgd: PGD crafted on the dense parent, tried on the scored model"

    def validate(self) -> None:
        check_positive(self, "steps", "rel_step", "restarts")

    def skip_reason(self) -> str | None:
        if self.context.parent is None:
            return "no parent model is known (pass --parent, or score a sweep cell that has one)"
        return None

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        parent = CountingModel(self.context.parent)  # the parent's passes are this attack's cost too
        x_adv = restarted_pgd(self, lambda labels: cross_entropy_objective(parent, labels), x, y, seed, record=False)
        self.other_passes[0] += parent.n_forward
        self.other_passes[1] += parent.n_backward
        return x_adv
