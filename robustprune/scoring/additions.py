"""Attacks that `score` adds to a battery because of what it learned about the model, each with its reason.

A battery is what the user asked for; some models make it insufficient, and then the honest thing is to attack
them the way their design calls for rather than report a flattering number:
- a multi-head randomized defense (DIO) meets PGD on the mean loss over all heads, first;
- any other randomized model (S2), or one whose rows depend on the batch composition (model contract), meets PGD
  with expectation over its randomness, first;
- a model whose graph is cut (S6) cannot meet gradient attacks, so a gradient-free one is added when the
  battery has none.
Every addition is recorded in the result's provenance (`battery_additions`) with its settings and reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from robustprune.attacks.base import ATTACKS
from robustprune.config import AttackSpec, BatterySpec


@dataclass(frozen=True)
class Addition:
    attack: AttackSpec
    first: bool  # run before the battery's own attacks (else after them)
    reason: str
    present: Callable[[AttackSpec], bool]  # an attack already in the battery that makes the addition unnecessary

    def apply(self, battery: BatterySpec) -> tuple[BatterySpec, dict[str, Any]]:
        """(battery to run, record); the record says `added: false` when the battery already covers it."""
        if any(self.present(a) for a in battery.active_attacks()):
            return battery, {"attack": self.attack.name, "added": False, "reason": "already in the battery"}
        added, spec = battery.with_attack(self.attack, first=self.first)
        return added, {
            "attack": spec.name,
            "label": spec.label,
            "added": True,
            "position": 0 if self.first else len(added.attacks) - 1,
            "settings": dict(spec.params),
            "reason": self.reason,
        }


def _named(*names: str) -> Callable[[AttackSpec], bool]:
    return lambda spec: spec.name in names


MULTI_HEAD_ATTACK = AttackSpec(
    name="all_heads_pgd",
    label="all_heads_pgd",
    params={"steps": 40, "rel_step": 0.0625, "eot_iter": 10, "random_start": True},
)
MULTI_HEAD = Addition(
    attack=MULTI_HEAD_ATTACK,
    first=True,
    reason=(
        "the model is a multi-head randomized defense (all_head_logits/set_mode/n_heads): a random-head "
        "forward pass flatters it, so PGD on the mean cross-entropy over all heads was added first"
    ),
    present=_named("all_heads_pgd"),
)

RANDOMIZED = Addition(
    # The budget of AutoAttack's rand APGD-CE (100 steps, EOT over 20 draws): with 40 steps and 10 draws a plain
    # torchattacks EOT-PGD (40 x 20) still broke examples this attack missed on a noise-injecting MLP.
    attack=AttackSpec(
        name="adaptive_eot_pgd",
        label="adaptive_eot_pgd",
        params={"steps": 100, "rel_step": 0.025, "eot_iter": 20, "random_start": True},
    ),
    first=True,
    reason=(
        "the forward pass is not deterministic (S2): attacks that follow one noisy pass, and AutoAttack, which "
        "keeps the clean input wherever its one-pass check missed the break, flatter such a model, so PGD with "
        "expectation over 20 forward passes (100 steps) was added first"
    ),
    present=_named("all_heads_pgd", "adaptive_eot_pgd", "eot_pgd"),
)

BATCH_DEPENDENT = dataclasses.replace(
    RANDOMIZED,
    reason=(
        "an example's logits depend on the other examples in its batch (model contract): an attack crafted on one "
        "batch and judged on another would flatter or wrong it, so it is scored as randomized (verdicts over "
        "repeated passes) and PGD with expectation over 20 forward passes (100 steps) was added first"
    ),
)

GRADIENT_FREE = Addition(
    attack=AttackSpec(name="square", params={"n_queries": 5000, "n_restarts": 1, "p_init": 0.8}),
    first=False,
    reason=(
        "no gradient reaches the input (S6), so the battery's gradient attacks cannot run and it has no "
        "gradient-free attack: Square (AutoAttack's settings) was added last"
    ),
    present=lambda spec: not ATTACKS.get(spec.name).uses_gradients,
)
