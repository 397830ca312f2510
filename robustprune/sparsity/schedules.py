"""Sparsity schedules: pure functions of the training step, and the registry a recipe's `schedule` names.

A schedule says what target sparsity the masks should have when; `robustprune.defenses.pruning_driver` applies it
during training. Kinds: `one_shot` prunes once before training; `rounds` prunes to each of `round_targets` and
trains between (iterative magnitude pruning); `gradual` updates the masks during training at the steps where
`target_at` returns a value. Adding a schedule: one registered `Schedule` subclass.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC
from collections.abc import Callable
from typing import ClassVar, Literal, Protocol

from robustprune.errors import UsageError
from robustprune.registry import Registry
from robustprune.sparsity.masks import check_sparsity


def _check_steps(**values: float) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise UsageError(f"{name} must be a finite number, got {v!r}")


def agp_sparsity(step: float, s_init: float, s_final: float, t0: float, n_steps: int, dt: float = 1) -> float:
    """Automated Gradual Pruning (Zhu & Gupta 2017; algorithms.md §4.2(b)), the cubic schedule
    s_t = s_f + (s_i − s_f)·(1 − (t − t0)/(n·Δt))³, equal to s_i before t0 and s_f after t0 + n·Δt.

    Continuous in t: the caller updates masks only every Δt steps (and stops after t0 + n·Δt).
    """
    _check_steps(step=step, t0=t0, dt=dt)
    s_i, s_f = check_sparsity(s_init, "s_init"), check_sparsity(s_final, "s_final")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1 or dt <= 0:
        raise UsageError(f"AGP needs n_steps >= 1 and dt > 0, got n_steps={n_steps!r}, dt={dt!r}")
    progress = min(max((step - t0) / (n_steps * dt), 0.0), 1.0)
    return s_f + (s_i - s_f) * (1.0 - progress) ** 3


def one_cycle_sparsity(
    step: float, total_steps: float, s_final: float, alpha: float = 14.0, beta: float = 6.0, s_init: float = 0.0
) -> float:
    """One-Cycle Pruning's logistic schedule (Hubens et al.; algorithms.md §4.3(b), fasterai `sched_onecycle`):
    with p = t/T clamped to [0, 1], s(p) = s_i + (s_f − s_i)·(1 + e^{−α+β}) / (1 + e^{−α·p+β}).

    s(1) = s_f exactly; s(0) = s_i + (s_f − s_i)·(1 + e^{−8})/(1 + e^{6}) ≈ s_i + 0.0025·(s_f − s_i) for α=14, β=6
    (the formula as published, not forced to s_i).
    """
    _check_steps(step=step, total_steps=total_steps, alpha=alpha, beta=beta)
    s_i, s_f = check_sparsity(s_init, "s_init"), check_sparsity(s_final, "s_final")
    if total_steps <= 0:
        raise UsageError(f"total_steps must be > 0, got {total_steps!r}")
    p = min(max(step / total_steps, 0.0), 1.0)
    return s_i + (s_f - s_i) * (1.0 + math.exp(-alpha + beta)) / (1.0 + math.exp(-alpha * p + beta))


def iterative_sparsities(s_final: float, n_rounds: int) -> list[float]:
    """Targets after rounds r = 1..R of iterative magnitude pruning: 1 − (1 − s_f)^(r/R), so every round keeps
    the same fraction (1 − s_f)^(1/R) of the surviving weights; the last target is s_final exactly."""
    s_f = check_sparsity(s_final, "s_final")
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, int) or n_rounds < 1:
        raise UsageError(f"n_rounds must be a positive int, got {n_rounds!r}")
    targets = [1.0 - (1.0 - s_f) ** (r / n_rounds) for r in range(1, n_rounds + 1)]
    targets[-1] = s_f  # no float drift on the final target
    return targets


AUTO_UPDATES = 32  # interval = 0: about this many mask updates over a gradual run


class ScheduleParams(Protocol):
    """The schedule fields of a recipe's [pruning] table (robustprune.defenses.base.PruningSpec)."""

    rounds: int
    start_fraction: float
    end_fraction: float
    alpha: float
    beta: float
    interval: int


class Schedule(ABC):
    """One registered schedule. `kind` says how training realises it (see the module docstring)."""

    name: ClassVar[str]
    kind: ClassVar[Literal["one_shot", "rounds", "gradual"]]

    def round_targets(self, s_final: float, params: ScheduleParams) -> list[float]:
        """`rounds` schedules: the target of each prune-then-train round."""
        raise TypeError(f"schedule {self.name!r} is not run in rounds")

    def target_at(self, t: int, total: int, s_start: float, s_final: float, params: ScheduleParams) -> float | None:
        """`one_shot` and `gradual` schedules: the target when the masks are updated after `t` of `total`
        optimizer steps, else None. `s_start` is the sparsity the run started from (a pruned parent's)."""
        raise TypeError(f"schedule {self.name!r} is not run step by step")


SCHEDULES: Registry[Schedule] = Registry("pruning schedule")


def register_schedule(name: str) -> Callable[[type[Schedule]], type[Schedule]]:
    """Register an instance of the decorated Schedule under `name` (also its `name` attribute)."""
    return SCHEDULES.register_instance(name)


def update_interval(total: int, params: ScheduleParams) -> int:
    """Optimizer steps between mask updates: the recipe's `interval`, or about AUTO_UPDATES updates per run."""
    return params.interval or max(1, total // AUTO_UPDATES)


@register_schedule("one_shot")
class OneShot(Schedule):
    """Prune the starting model (the parent, else the fresh init) once to the target, then train / fine-tune."""

    kind = "one_shot"

    def target_at(self, t: int, total: int, s_start: float, s_final: float, params: ScheduleParams) -> float | None:
        return s_final if t == 0 else None


@register_schedule("iterative")
class Iterative(Schedule):
    """R prune-then-train rounds to 1 - (1 - s)^(r/R) (Han et al., arXiv 1506.02626)."""

    kind = "rounds"

    def round_targets(self, s_final: float, params: ScheduleParams) -> list[float]:
        return iterative_sparsities(s_final, params.rounds)


@register_schedule("agp")
class AGP(Schedule):
    """Zhu & Gupta's cubic schedule (arXiv 1710.01878): updates every interval steps between start_fraction and
    end_fraction of training, the last exactly at end_fraction."""

    kind = "gradual"

    def target_at(self, t: int, total: int, s_start: float, s_final: float, params: ScheduleParams) -> float | None:
        if total == 0:
            return s_final if t == 0 else None
        t0 = round(params.start_fraction * total)
        t_end = max(t0 + 1, round(params.end_fraction * total))
        n = max(1, math.ceil((t_end - t0) / update_interval(total, params)))
        dt = (t_end - t0) / n
        k = (t - t0) / dt
        if t < t0 or t > t_end or round(t0 + round(k) * dt) != t:
            return None
        return agp_sparsity(t, s_start, s_final, t0, n, dt)


@register_schedule("one_cycle")
class OneCycle(Schedule):
    """Hubens et al.'s logistic schedule (arXiv 2107.02086, alpha = 14, beta = 6): every interval steps and on the
    last one."""

    kind = "gradual"

    def target_at(self, t: int, total: int, s_start: float, s_final: float, params: ScheduleParams) -> float | None:
        if total == 0:
            return s_final if t == 0 else None
        if t % update_interval(total, params) and t != total:
            return None
        return one_cycle_sparsity(t, total, s_final, params.alpha, params.beta, s_start)
