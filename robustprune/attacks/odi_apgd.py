"""A diversified top-up for the survivors closest to flipping (the A3 / ODI idea).

Two observations from the literature shape it. Output-diversified initialization (ODI, Tashiro et al. NeurIPS
2020) starts each restart from a point pushed along a random direction in logit space, so restarts explore
different basins instead of repeating one; A3 (Liu et al. CVPR 2022) spends restarts only on examples whose loss
says they can still be broken. Here a short untargeted APGD-DLR probe ranks the survivors by how close they came
to flipping (their best DLR loss); the closest `fraction` then get `restarts` ODI-started APGD-DLR runs. Every
stage stops on an example as soon as it is broken.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robustprune.attacks.base import check_positive, register_attack
from robustprune.attacks.fast_apgd import PackedAttack, run_jobs
from robustprune.attacks.packed_apgd import StartPoints, normalize, project, random_starts, untargeted_jobs
from robustprune.errors import UsageError


def odi_starts(model: nn.Module, norm: str, eps: float, odi_steps: int) -> StartPoints:
    """A random start, then `odi_steps` steps of size eps up w . logits for a random w in [-1, 1]^K per job."""
    base = random_starts(norm, eps)

    def start(x: torch.Tensor, y: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        x_adv = base(x, y, generators)
        with torch.no_grad():
            num_classes = model(x_adv[:1]).shape[1]
        w = torch.stack([2 * torch.rand(num_classes, generator=g) - 1 for g in generators]).to(x)
        for _ in range(odi_steps):
            x_in = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad((model(x_in).float() * w).sum(), x_in)
            direction = grad.sign() if norm == "Linf" else normalize(grad, norm)
            x_adv = project(x_in.detach() + eps * direction, x, norm, eps)
        return x_adv.detach()

    return start


@register_attack("odi_apgd")
class ODITopUp(PackedAttack):
    defaults = {
        "fraction": 0.25,
        "probe_steps": 10,
        "restarts": 2,
        "odi_steps": 2,
        "steps": 50,
        "rho": 0.75,
        "early_stop": True,
    }
    implementation = (
        "robustprune ODI top-up: APGD-DLR probe ranks survivors, the closest fraction get ODI-started APGD-DLR "
        "restarts (packed, early stopping)"
    )

    def validate(self) -> None:
        check_positive(self, "fraction", "probe_steps", "restarts", "steps", "rho")
        if not self.settings["fraction"] <= 1:
            raise UsageError(
                f"attack {self.spec.label!r}: fraction must be in (0, 1], got {self.settings['fraction']!r}"
            )

    def skip_reason(self) -> str | None:
        if self.num_classes is not None and self.num_classes < 3:
            return f"the data has {self.num_classes} classes; the DLR loss reads the third-largest logit"
        if self.context.randomized:
            return (
                "randomized model: one noisy pass cannot rank survivors by closeness to flipping; the EOT attacks "
                "before it spend the budget"
            )
        return super().skip_reason()

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        common = {"loss": "dlr", "seed": seed, "batch_size": batch_size}
        jobs = untargeted_jobs(range(len(x)))
        probe = run_jobs(self, model, x, y, jobs, steps=int(self.settings["probe_steps"]), **common)
        out = probe.x_adv
        standing = [row for row in range(len(x)) if not probe.found[row]]
        if not standing:
            return out
        k = max(1, math.ceil(float(self.settings["fraction"]) * len(standing)))
        closest = sorted(sorted(standing, key=lambda row: (-float(probe.best_loss[row]), row))[:k])
        jobs = untargeted_jobs(closest, restarts=int(self.settings["restarts"]), rank=1)
        starts = odi_starts(model, self.threat.norm, self.threat.eps, int(self.settings["odi_steps"]))
        topup = run_jobs(self, model, x, y, jobs, steps=int(self.settings["steps"]), starts=starts, **common)
        rows = torch.tensor(closest, dtype=torch.long, device=x.device)
        out[rows] = topup.x_adv[rows]
        note = f"top-up on the {k} of {len(standing)} probe survivors closest to flipping"
        self.notes[:] = [n for n in self.notes if not n.startswith("top-up on")] + [note]
        return out
