"""The health-check contract: each check is a registered unit that looks at the model, or at what the battery
(and the probes the checks ask for) did, and returns a CheckResult the verdict is derived from.

A check has a stage: `model` checks run before any attack (they decide how the model must be attacked: as a
randomized model, without gradients, with rescaled logits, through BPDA); `outcome` checks judge the battery's
result, after the probe attacks they request have run on the battery's survivors (through the engine, so
whatever a probe breaks is verified and counts as broken).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from robustprune.attacks.base import ATTACKS
from robustprune.attacks.battery import AttackRecord, BatteryOutcome, run_battery
from robustprune.attacks.gradient_stops import GradientStop
from robustprune.config import AttackSpec, BatterySpec
from robustprune.registry import Registry
from robustprune.scoring.health.records import CheckResult

Status = Literal["pass", "warn", "fail", "skip", "error"]
# Checks that guard against gradient masking: one that could not run (status `error`) leaves masking undetected,
# so the verdict is untrusted (scoring/verdict.py); any other check in error makes it at least caution.
MASKING_GUARDS = ("S6", "S7", "S8", "S9", "S10", "S13", "S16", "S20", "S21", "S23")
MODEL_SAMPLE = 64  # examples the model checks look at
# model -> a context in which to check it again (an escalation's view of the model: BPDA, rescaled logits)
ModelTransform = Callable[[nn.Module], AbstractContextManager[nn.Module]]
PROBE_SAMPLE = 32  # survivors the costlier probes attack


@dataclass
class HealthContext:
    """Everything a check may look at; built once per score."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    battery: BatterySpec
    seed: int
    batch_size: int
    parent: nn.Module | None = None
    reference_acc: float | None = None  # clean accuracy recorded for this model elsewhere (its train manifest)
    randomized: bool = False
    gradients: bool = True
    n_passes: int = 1
    outcome: BatteryOutcome | None = None
    battery_labels: list[str] = field(default_factory=list)  # the battery's own attacks (no probes)
    probe_labels: dict[str, str] = field(default_factory=dict)  # check id -> label of its probe column
    gradient_killers: list[str] = field(default_factory=list)  # modules found to zero the gradient (for BPDA)
    gradient_stops: list[GradientStop] = field(default_factory=list)  # operations that stop it (S23, for BPDA)
    bridged: bool = False  # a straight-through version of the located stops gives a usable gradient (S23)
    model_results: dict[str, CheckResult] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[:MODEL_SAMPLE], self.y[:MODEL_SAMPLE]

    def survivors(self, limit: int | None = None) -> np.ndarray:
        """Indices of the examples nothing has broken yet (a seeded sample of at most `limit`)."""
        alive = np.flatnonzero(~self.outcome.broken) if self.outcome is not None else np.arange(len(self.y))
        if limit is not None and len(alive) > limit:
            alive = np.sort(np.random.default_rng(self.seed).choice(alive, size=limit, replace=False))
        return alive

    def run_attack(self, spec: AttackSpec, *, role: str, only: np.ndarray | None = None) -> AttackRecord:
        """Run one more attack through the engine on what the outcome so far left unbroken (`only`: among these
        indices); it is verified and counts in the worst case like the battery's. Returns its record."""
        return self.run_attacks([spec], role=role, only=only)[0]

    def run_attacks(
        self,
        specs: list[AttackSpec],
        *,
        role: str,
        only: np.ndarray | None = None,
        view: ModelTransform | None = None,
        points: dict[int, torch.Tensor] | None = None,
    ) -> list[AttackRecord]:
        """`run_attack` for several attacks in order, each on what the previous left; with `view`, the attacks see the
        model through it (BPDA's straight-through view) and gradient attacks run wherever it bridges the graph."""
        battery = BatterySpec(name=f"{role}:{specs[0].label}", threat=self.battery.threat, attacks=tuple(specs))
        self.outcome = run_battery(
            self.model,
            self.x,
            self.y,
            battery,
            num_classes=self.num_classes,
            seed=self.seed,
            batch_size=self.batch_size,
            n_passes=self.n_passes,
            gradients=self.gradients or (view is not None and self.bridged),
            parent=self.parent,
            bridged=self.bridged,
            continue_from=self.outcome,
            only=only,
            role=role,
            view=view,
            points=points,
        )
        return self.outcome.records[-len(specs) :]

    def record(self, label: str) -> AttackRecord:
        return next(r for r in self.outcome.records if r.label == label)

    def attack_class(self, label: str) -> Any:
        return ATTACKS.get(self.record(label).description["name"])

    def is_targeted(self, label: str) -> bool:
        return bool(self.attack_class(label).is_targeted(self.record(label).description["settings"]))


class Check(ABC):
    id: ClassVar[str]
    name: ClassVar[str]
    stage: ClassVar[Literal["model", "outcome", "bounds"]]
    threshold: ClassVar[str] = ""
    how_to_fix: ClassVar[str] = ""
    needs_ball: ClassVar[bool] = False  # meaningless at eps = 0 (attacks inside the threat model's ball)

    def probe(self, ctx: HealthContext) -> tuple[AttackSpec, int | None] | None:
        """An attack to run on the battery's survivors before `evaluate` (and at most how many of them)."""
        return None

    @abstractmethod
    def evaluate(self, ctx: HealthContext) -> CheckResult:
        """The check's result."""

    def result(self, status: Status, value: Any, message: str) -> CheckResult:
        return CheckResult(
            id=self.id,
            name=self.name,
            status=status,
            value=value,
            threshold=self.threshold,
            message=message,
            how_to_fix=self.how_to_fix if status in ("warn", "fail") else "",
        )

    def skip(self, why: str) -> CheckResult:
        return self.result("skip", None, why)


HEALTH_CHECKS: Registry[Check] = Registry("health check")


def register_check(check_id: str) -> Callable[[type[Check]], type[Check]]:
    """Register an instance of the decorated Check under its id (S1, S2, ...)."""

    def decorator(cls: type[Check]) -> type[Check]:
        cls.id = check_id
        HEALTH_CHECKS.add(check_id, cls())
        return cls

    return decorator


def ordered_checks(stage: str) -> list[Check]:
    """The registered checks of a stage in id order (S1, S2, ..., S10, ...)."""
    checks = [HEALTH_CHECKS.get(name) for name in HEALTH_CHECKS.names()]
    return sorted((c for c in checks if c.stage == stage), key=lambda c: (len(c.id), c.id))


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """The gradient of the summed cross-entropy with respect to the input; None when no gradient reaches it."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        try:
            (grad,) = torch.autograd.grad(loss, x)
        except RuntimeError:
            return None
    return grad


def column_breaks(ctx: HealthContext, label: str | None) -> np.ndarray:
    """Indices of the examples an attack (or probe) column broke; empty when it did not run."""
    if label is None or label not in ctx.outcome.columns:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(ctx.outcome.columns[label].broken)
