"""The attack adapter contract: (model, x, y, seed) -> x_adv inside the threat model.

The battery engine owns eval mode, gradient bookkeeping, seeding, verification, pass counting and timing, so an
adapter only maps its settings onto the library it wraps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from robustprune.attacks.cost import check_unknown_setting, passes_per_example
from robustprune.config import AttackSpec, ParamValue, ThreatModel, coerce_setting
from robustprune.errors import UsageError
from robustprune.registry import Registry
from robustprune.validation import BOUNDS, escape
from robustprune.version import package_version

# `package.module:Class` and `torchattacks:Class` names resolve on demand: robustprune.attacks.custom installs the
# resolver when the package is imported.
ATTACKS: Registry[type[Attack]] = Registry("attack")
# How a gradient attack's skip reason starts when S6 found the graph cut (the result's alert looks for it)
NO_GRADIENT = "no gradient reaches the input (S6)"


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Register an adapter class under `name`, which also becomes its `name` attribute."""
    return ATTACKS.register_named(name)


@dataclass(frozen=True)
class AttackContext:
    """What the engine learned about the model before attacking, for attacks that must adapt to it.

    verdict_passes: forward passes per verdict; above 1 the model is randomized (S2, or a multi-head model in
        random mode) and an example counts as correct only if it is correct on every pass.
    gradients: a gradient reaches the input (False when S6 found the graph cut: gradient attacks cannot run).
    """

    verdict_passes: int = 1
    gradients: bool = True
    parent: Any = None  # the dense parent model (nn.Module) when known: transfer attacks craft on it
    bridged: bool = False  # S23: a straight-through version of the forward pass's gradient stops gives a gradient
    points: dict[int, Any] | None = None  # example -> a precomputed point to replay (attacks/replay.py)

    @property
    def randomized(self) -> bool:
        return self.verdict_passes > 1


class Attack(ABC):
    """Base adapter. Subclasses set `name`, `norms`, `defaults`, `implementation` and `perturb_batch`."""

    name: ClassVar[str]
    norms: ClassVar[tuple[str, ...]] = ("Linf", "L2")
    defaults: ClassVar[dict[str, ParamValue]] = {}
    implementation: ClassVar[str] = ""
    library: ClassVar[str] = "robustprune"
    min_classes: ClassVar[int] = 2
    # Adapters whose library batches internally (pyautoattack) receive every unbroken example at once.
    batches_itself: ClassVar[bool] = False
    # Attacks that follow the input gradient; they are skipped (and say so) when no gradient reaches the input.
    uses_gradients: ClassVar[bool] = True
    # robustprune's own attacks document and bound every setting; a class it does not know (torchattacks:Name, a
    # user's package.module:Class) gets bounds from its settings' names and defaults (attacks/cost.py).
    known_settings: ClassVar[bool] = True

    def __init__(
        self, spec: AttackSpec, threat: ThreatModel, num_classes: int | None, context: AttackContext | None = None
    ) -> None:
        """Resolve and check everything about the attack that can be known before a model exists.

        `num_classes` None (the data is not read yet) skips the class-count check only.
        """
        self.spec = spec
        self.threat = threat
        self.num_classes = num_classes
        self.context = context or AttackContext()
        self.notes: list[str] = []  # what the attack changed about itself for this model, and why
        self.traces: list[Any] = []  # PGDTrace per batch, from attacks that keep one (robustprune's own)
        self.other_passes = [0, 0]  # forward / backward passes (in examples) spent on other models (a parent)
        self.index: torch.Tensor | None = (
            None  # which examples (indices into the scored set) it is handed; the engine sets it
        )
        where = f"attack {spec.label!r} ({self.name})"
        if threat.norm not in self.norms:
            raise UsageError(f"{where} does not support the {threat.norm} norm; it supports {', '.join(self.norms)}")
        self.settings = self.resolve_settings(spec)
        self.validate()
        if num_classes is not None and num_classes < self.required_classes():
            raise UsageError(f"{where} needs at least {self.required_classes()} classes, the data has {num_classes}")

    @classmethod
    def resolve_settings(cls, spec: AttackSpec) -> dict[str, ParamValue]:
        """Defaults overridden by the spec's params: known keys only, typed, finite and within the bounds."""
        where = f"attack {spec.label!r} ({cls.name})"
        settings: dict[str, ParamValue] = dict(cls.defaults)
        for key, value in spec.params.items():
            if key not in cls.defaults:
                allowed = ", ".join(sorted(cls.defaults)) or "none"
                raise UsageError(f"{where}: unknown setting {escape(repr(key))}; allowed settings are {allowed}")
            settings[key] = coerce_setting(value, cls.defaults[key], f"{where} setting {key!r}", key)
            if not cls.known_settings and key not in BOUNDS:
                check_unknown_setting(key, settings[key], cls.defaults[key], where)
        return settings

    def passes_per_example(self) -> float:
        """Model passes (forward + backward) one attacked example costs, estimated from the settings."""
        return passes_per_example(self.settings)

    @classmethod
    def is_targeted(cls, settings: dict[str, ParamValue]) -> bool:
        """Whether the attack, with these settings, attacks chosen target classes (S17 compares it with the
        untargeted attacks)."""
        return False

    def record_trace(self, trace: Any) -> None:
        """Keep a batch's PGDTrace (best loss per step, adversarial iterates found) for the health checks."""
        self.traces.append(trace)

    def validate(self) -> None:
        """Hook for setting checks beyond types (ranges, choices); it must not depend on num_classes."""

    def required_classes(self) -> int:
        """The fewest classes the attack can work with (its loss reads the k-th largest logit)."""
        return self.min_classes

    def skip_reason(self) -> str | None:
        """Why this attack cannot run on this model (None: it runs)."""
        if self.uses_gradients and not self.context.gradients:
            return f"{NO_GRADIENT}: a gradient attack cannot run on this model"
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.spec.label,
            "implementation": self.implementation,
            "library": self.library,
            "library_version": package_version(self.library) or "unknown",
            "norm": self.threat.norm,
            "eps": self.threat.eps,
            "settings": dict(self.settings),
            "notes": list(self.notes),
        }

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        seed: int,
        batch_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Attack every example; batches of `batch_size` unless the library batches itself."""
        if self.batches_itself:
            x_adv = self.perturb_batch(model, x, y, seed=seed, batch_size=batch_size)
            if on_batch:
                on_batch(len(x))
            return x_adv
        out = []
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            out.append(self.perturb_batch(model, xb, yb, seed=seed, batch_size=batch_size))
            if on_batch:
                on_batch(len(xb))
        return torch.cat(out) if out else x.clone()

    @abstractmethod
    def perturb_batch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int, batch_size: int
    ) -> torch.Tensor:
        """Return adversarial examples for one batch (the engine verifies them)."""

    def step_size(self) -> float:
        """Absolute step from `rel_step` (a fraction of eps), the unit-free way batteries state it."""
        return float(self.settings["rel_step"]) * self.threat.eps


def check_choice(attack: Attack, key: str, choices: tuple[str, ...]) -> None:
    if attack.settings[key] not in choices:
        raise UsageError(
            f"attack {attack.spec.label!r}: {key} = {attack.settings[key]!r} is not one of {', '.join(choices)}"
        )


def check_positive(attack: Attack, *keys: str) -> None:
    for key in keys:
        if not attack.settings[key] > 0:
            raise UsageError(f"attack {attack.spec.label!r}: {key} must be > 0, got {attack.settings[key]!r}")
