"""Probe attacks the health checks run on the battery's survivors. Each is a plain registered attack, so what it
finds goes through the engine like any attack's output (verified, re-classified, counted in the worst case).

- `uniform_noise` (S10): random points of the eps-ball; a survivor that falls to noise survived gradients by luck
  or by masking.
- `single_step` (S11): one signed (Linf) or normalised (L2) gradient step of size eps.
- `probe_pgd` (S12, S14): robustprune's traced PGD inside a fraction of eps (a survivor broken inside eps/2 breaks
  monotonicity) or with a larger budget (convergence).
"""

from __future__ import annotations

import torch
from torch import nn

from robustprune.attacks.base import Attack, check_positive, register_attack
from robustprune.attacks.pgd_core import cross_entropy_objective, pgd, project, random_delta, restarted_pgd


@register_attack("uniform_noise")
class UniformNoise(Attack):
    uses_gradients = False
    defaults = {"draws": 20}
    implementation = "robustprune uniform_noise: uniform random points of the eps-ball (the first misclassified kept)"

    def validate(self) -> None:
        check_positive(self, "draws")

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        generator = torch.Generator().manual_seed(seed)
        best = x.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with torch.no_grad():
            for _ in range(int(self.settings["draws"])):
                candidate = x + project(
                    random_delta(x, self.threat.norm, self.threat.eps, generator), x, self.threat.norm, self.threat.eps
                )
                wrong = model(candidate).argmax(dim=1) != y
                take = wrong & ~done
                best[take] = candidate[take]
                done |= wrong
        return best


@register_attack("single_step")
class SingleStep(Attack):
    defaults = {}
    implementation = "robustprune single_step: one gradient step of size eps (FGSM for Linf, FGM for L2)"

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        x_adv, _ = pgd(
            cross_entropy_objective(model, y, deterministic=not self.context.randomized),
            x,
            norm=self.threat.norm,
            eps=self.threat.eps,
            alpha=self.threat.eps,
            steps=1,
            random_start=False,
            generator=torch.Generator().manual_seed(seed),
        )
        return x_adv


@register_attack("probe_pgd")
class ProbePGD(Attack):
    defaults = {"steps": 100, "rel_step": 0.025, "restarts": 1, "eps_fraction": 1.0}
    implementation = "robustprune probe_pgd: traced PGD with restarts, optionally inside a fraction of eps"

    def validate(self) -> None:
        check_positive(self, "steps", "rel_step", "restarts", "eps_fraction")

    def step_size(self) -> float:
        return float(self.settings["rel_step"]) * self.radius()

    def radius(self) -> float:
        return min(1.0, float(self.settings["eps_fraction"])) * self.threat.eps

    def perturb_batch(self, model: nn.Module, x, y, *, seed, batch_size):
        threat = self.threat
        self.threat = type(threat)(norm=threat.norm, eps=self.radius())
        try:
            return restarted_pgd(
                self,
                lambda labels: cross_entropy_objective(model, labels, deterministic=not self.context.randomized),
                x,
                y,
                seed,
            )
        finally:
            self.threat = threat
