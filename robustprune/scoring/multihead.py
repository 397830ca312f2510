"""Scoring multi-head randomized defenses (DIO) without flattering them (algorithms.md §2(f), evaluation.md §2.7).

A model counts as multi-head when it exposes `all_head_logits`, `set_mode` and `n_heads` (duck-typed, so any
implementation qualifies). `score` then
- scores it in its random mode, as deployed, with the adaptive `all_heads_pgd` attack inserted first in the battery
  (PGD on the mean cross-entropy over all heads: one forward pass's random head is not what an attacker faces);
- marks it randomized even when the determinism check (S2) did not happen to see the randomness;
- adds `multi_head`: the battery run against each head in fixed mode (an attacker who knows the head), reporting
  per-head clean and robust accuracy and the worst, mean and std over heads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch import nn

from robustprune.config import BatterySpec
from robustprune.data import Dataset
from robustprune.scoring.additions import MULTI_HEAD, MULTI_HEAD_ATTACK


def is_multi_head(model: nn.Module) -> bool:
    return all(hasattr(model, attr) for attr in ("all_head_logits", "set_mode", "n_heads"))


def prepare(model: nn.Module, battery: BatterySpec) -> tuple[BatterySpec, dict[str, Any] | None]:
    """For `score`: (battery to run, addition record or None); ordinary models pass through unchanged."""
    if not is_multi_head(model):
        return battery, None
    return MULTI_HEAD.apply(battery)


@contextlib.contextmanager
def mode(model: nn.Module, name: str, head: int | None = None) -> Iterator[None]:
    """Switch a multi-head model to `name` (a no-op for ordinary models); the original mode is restored after."""
    if not is_multi_head(model):
        yield
        return
    saved = (getattr(model, "mode", "random"), getattr(model, "head", None))
    model.set_mode(name, head)
    try:
        yield
    finally:
        model.set_mode(*saved)


def multihead_report(
    model: nn.Module,
    data: Dataset,
    battery: BatterySpec,
    *,
    seed: int,
    batch_size: int,
    random_mode_battery: BatterySpec | None = None,
) -> dict[str, Any] | None:
    """None for ordinary models; else per-head clean / robust accuracy (percent) under `battery` in fixed mode.

    `random_mode_battery` is the battery the random mode was scored with: its adaptive attack's settings are the
    ones recorded (by default, those `prepare` would add to `battery`).
    """
    from robustprune.attacks.battery import run_battery

    if not is_multi_head(model):
        return None
    clean, robust, n_forward, n_backward = [], [], 0, 0
    for head in range(int(model.n_heads)):
        with mode(model, "fixed", head):
            outcome = run_battery(
                model, data.x, data.y, battery, num_classes=data.num_classes, seed=seed, batch_size=batch_size
            )
        clean.append(100.0 * float(np.mean(outcome.clean.correct)))
        robust.append(100.0 * float(np.mean(~outcome.broken)))
        n_forward += sum(r.n_forward for r in outcome.records)
        n_backward += sum(r.n_backward for r in outcome.records)
    ran = random_mode_battery or MULTI_HEAD.apply(battery)[0]
    settings = next(a for a in ran.attacks if a.name == MULTI_HEAD_ATTACK.name)
    return {
        "randomized": True,
        "n_heads": int(model.n_heads),
        "original_mode": getattr(model, "mode", None),
        "scored_mode": "random",
        "adaptive_attack": {"name": settings.name, "label": settings.label, **settings.params},
        "per_head_battery": battery.name,
        "per_head_clean_acc": clean,
        "per_head_robust_acc": robust,
        "worst_head_robust_acc": min(robust),
        "mean_head_robust_acc": float(np.mean(robust)),
        "std_head_robust_acc": float(np.std(robust)),
        "worst_head_clean_acc": min(clean),
        "mean_head_clean_acc": float(np.mean(clean)),
        "n_forward": n_forward,  # the per-head runs' attack passes, in examples
        "n_backward": n_backward,
    }
