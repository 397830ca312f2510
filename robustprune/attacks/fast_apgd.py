"""APGD with per-example early stopping and re-packed batches (packed_apgd.py): the gradient stages of `fast`.

`fast_apgd` is untargeted APGD on the CE or DLR loss; `fast_apgd_t` is targeted APGD on the DLR loss against
`n_targets` classes. AutoAttack's APGD-T tries the 9 classes with the highest clean logits, 100 steps each. Which
classes come first matters more than how many: on a PGD-AT digits CNN the examples only APGD-T broke fell to the
class ranked 4th by logit but 1st by MALT's estimate (Melamed et al., NeurIPS 2024): the distance to each class's
boundary under a linear model, (z_y - z_t) / ||grad (z_y - z_t)||_dual. So the candidates are the top 9 by
logit, ordered by that estimate (`target_order = "logits"` keeps AutoAttack's order), and the attack stops on an
example as soon as one target breaks it.
"""

from __future__ import annotations

import torch
from torch import nn

from robustprune.attacks.base import Attack, check_choice, check_positive, register_attack
from robustprune.attacks.packed_apgd import PackedResult, StartPoints, run_packed_apgd, untargeted_jobs

EOT_PASSES = 20  # gradient averaging on a randomized model, as AutoAttack's 'rand' version


def run_jobs(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: list[tuple[int, int, int, int]],
    *,
    loss: str,
    steps: int,
    seed: int,
    batch_size: int,
    starts: StartPoints | None = None,
) -> PackedResult:
    """The packed APGD with an attack's threat model, rho and early-stop settings; EOT on a randomized model."""
    return run_packed_apgd(
        model,
        x,
        y,
        jobs,
        norm=attack.threat.norm,
        eps=attack.threat.eps,
        steps=steps,
        loss=loss,
        seed=seed,
        batch_size=batch_size,
        rho=float(attack.settings["rho"]),
        early_stop=bool(attack.settings["early_stop"]),
        eot=EOT_PASSES if attack.context.randomized else 1,
        deterministic=not attack.context.randomized,
        starts=starts,
    )


class PackedAttack(Attack):
    """Attacks on the packed engine receive every unbroken example at once and pack their own batches."""

    batches_itself = True


@register_attack("fast_apgd")
class FastAPGD(PackedAttack):
    defaults = {"steps": 100, "loss": "ce", "restarts": 1, "rho": 0.75, "early_stop": True}
    implementation = (
        "robustprune packed APGD (AutoAttack's step-size schedule; each example stops when broken, survivors are "
        "re-packed into full batches)"
    )

    def validate(self) -> None:
        check_positive(self, "steps", "restarts", "rho")
        check_choice(self, "loss", ("ce", "dlr"))

    def required_classes(self) -> int:
        return 3 if self.settings["loss"] == "dlr" else 2  # DLR reads the third-largest logit

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        jobs = untargeted_jobs(range(len(x)), restarts=int(self.settings["restarts"]))
        loss, steps = str(self.settings["loss"]), int(self.settings["steps"])
        return run_jobs(self, model, x, y, jobs, loss=loss, steps=steps, seed=seed, batch_size=batch_size).x_adv


@register_attack("fast_apgd_t")
class FastAPGDTargeted(PackedAttack):
    defaults = {"steps": 50, "n_targets": 3, "target_order": "malt", "rho": 0.75, "early_stop": True}
    implementation = (
        "robustprune packed APGD, targeted DLR loss on n_targets of the top 9 clean-logit classes, ordered by MALT's "
        "linear distance estimate (AutoAttack's step-size schedule; early stopping, re-packed batches)"
    )

    @classmethod
    def is_targeted(cls, settings):
        return True

    def skip_reason(self) -> str | None:
        # Part of the default battery: with fewer than 4 classes it steps aside instead of refusing the battery.
        needs = 3 if self.context.randomized else 4  # (untargeted) DLR reads the third (fourth) largest logit
        if self.num_classes is not None and self.num_classes < needs:
            return f"the data has {self.num_classes} classes; this stage's DLR loss needs {needs}"
        return super().skip_reason()

    def validate(self) -> None:
        check_positive(self, "steps", "n_targets", "rho")
        check_choice(self, "target_order", ("malt", "logits"))

    def targets(self) -> int:
        """The targets attacked: the setting, at most the num_classes - 1 classes there are."""
        return min(int(self.settings["n_targets"]), self.num_classes - 1)

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        steps = int(self.settings["steps"])
        if self.context.randomized:
            # Every step costs EOT_PASSES passes and one noisy pass cannot rank targets: run what AutoAttack's rand
            # version runs at this point, untargeted APGD-DLR for 100 steps with EOT.
            self.notes[:] = ["randomized model: untargeted APGD-DLR, 2 x steps, EOT over 20 passes per step"]
            jobs = untargeted_jobs(range(len(x)))
            return run_jobs(
                self, model, x, y, jobs, loss="dlr", steps=2 * steps, seed=seed, batch_size=batch_size
            ).x_adv
        order = ranked_targets(
            model, x, y, self.targets(), batch_size, by=str(self.settings["target_order"]), norm=self.threat.norm
        )
        jobs = [(row, int(order[row, rank]), rank + 1, 0) for rank in range(order.shape[1]) for row in range(len(x))]
        return run_jobs(
            self, model, x, y, jobs, loss="dlr-targeted", steps=steps, seed=seed, batch_size=batch_size
        ).x_adv


CANDIDATES = 9  # AutoAttack's APGD-T considers the 9 classes with the highest clean logits


def ranked_targets(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, batch_size: int, *, by: str, norm: str
) -> torch.Tensor:
    """Per example, k target classes: of the (up to) 9 others with the highest clean logits, the k with the
    smallest linear boundary-distance estimate (by "malt"), or the k highest logits (by "logits")."""
    out = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        xb = xb.detach().requires_grad_(by == "malt")
        with torch.set_grad_enabled(by == "malt"):
            logits = model(xb).float()
        others = logits.detach().masked_fill(nn.functional.one_hot(yb, logits.shape[1]).bool(), -float("inf"))
        candidates = others.topk(min(CANDIDATES, logits.shape[1] - 1), dim=1).indices
        if by == "malt":
            candidates = candidates.gather(1, linear_distance(logits, xb, yb, candidates, norm).argsort(dim=1))
        out.append(candidates[:, :k].cpu())
    return torch.cat(out) if out else torch.zeros((0, k), dtype=torch.long)


def linear_distance(
    logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, candidates: torch.Tensor, norm: str
) -> torch.Tensor:
    """(z_y - z_t) / ||grad_x (z_y - z_t)||_dual for each candidate t (one backward pass per class used)."""
    used = sorted(set(candidates.flatten().tolist()) | set(y.tolist()))
    grads = torch.stack(
        [
            torch.autograd.grad(logits[:, c].sum(), x, retain_graph=i < len(used) - 1)[0].flatten(1)
            for i, c in enumerate(used)
        ]
    )  # (classes used, N, D)
    slot = torch.full((logits.shape[1],), -1, dtype=torch.long, device=x.device)
    slot[torch.tensor(used, device=x.device)] = torch.arange(len(used), device=x.device)
    rows = torch.arange(len(x), device=x.device)
    grad_y = grads[slot[y], rows]
    distance = torch.empty(candidates.shape, device=x.device)
    for j in range(candidates.shape[1]):
        t = candidates[:, j]
        diff = grad_y - grads[slot[t], rows]
        dual = diff.abs().sum(dim=1) if norm == "Linf" else diff.norm(dim=1)
        distance[:, j] = (logits[rows, y] - logits[rows, t]).detach() / (dual + 1e-12)
    return distance
