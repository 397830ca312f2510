"""Minimum-norm attacks: per example, the closest misclassified point an attack finds, with no eps bound.

They feed the robustness-vs-eps curves (robustprune.scoring.eps_curve): one run gives every example's smallest
adversarial perturbation, so accuracy at every eps follows from one pass. Each entry is one function and one line
in MIN_NORM_ATTACKS; a new attack needs nothing else. Every point returned is checked by the caller (re-predicted
misclassified, inside [0, 1]); the distance used is the one measured on the point, never the attack's own claim.

  * fmn: Fast Minimum-Norm (Pintor et al., NeurIPS 2021), our implementation (robustprune.attacks.fmn).
  * fab: FAB in its minimum-norm mode (Croce & Hein, ICML 2020): torchattacks' untargeted single run, which
    tracks the smallest misclassified point it reaches without an eps bound (no random restart, so eps is unused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchattacks
from torch import nn

from robustprune.attacks.fmn import fmn
from robustprune.config.battery import EPS_CURVE_ATTACKS

MinNormRun = Callable[[nn.Module, torch.Tensor, torch.Tensor, str, int, int], torch.Tensor]


@dataclass(frozen=True)
class MinNormAttack:
    """`run(model, x, y, norm, steps, seed)` returns x_adv (the clean input where nothing was found)."""

    name: str
    title: str
    run: MinNormRun
    implementation: str


def _run_fmn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, steps: int, seed: int) -> torch.Tensor:
    return fmn(model, x, y, norm=norm, steps=steps, seed=seed).x_adv


def _run_fab(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, steps: int, seed: int) -> torch.Tensor:
    with torch.no_grad():
        n_classes = int(model(x[:1]).shape[1])
    # eps only scales FAB's random restarts, which the single run does not take; the search itself is unbounded
    attack = torchattacks.FAB(model, norm=norm, eps=1.0, steps=steps, n_restarts=1, n_classes=n_classes, seed=seed)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        x_adv = attack.attack_single_run(x, y, use_rand_start=False)
    return x_adv.detach().to(x.dtype)


MIN_NORM_ATTACKS: dict[str, MinNormAttack] = {
    attack.name: attack
    for attack in (
        MinNormAttack("fmn", "FMN", _run_fmn, "robustprune.attacks.fmn (Pintor et al. 2021, Linf and L2)"),
        MinNormAttack("fab", "FAB", _run_fab, "torchattacks.FAB.attack_single_run, untargeted, no restart"),
    )
}
DEFAULT_MIN_NORM = EPS_CURVE_ATTACKS
