"""The bracket of a score as results.json holds it: the certified lower bound beside the attacked upper bound, the
exact value where nothing is left undecided, and each example's status (scoring/bounds.py computes it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustprune.records import Record, extra_field, optional_field

STATUSES = ("wrong", "broken", "certified", "proved", "unknown")
PROVEN = ("certified", "proved")  # the statuses the certified accuracy counts


@dataclass
class UnknownExample(Record):
    """An example the bounds left undecided, and why (not certified by CROWN, a MILP time limit, the budget spent,
    a counterexample the model did not confirm)."""

    index: int
    reason: str


@dataclass
class BoundsReport(Record):
    """certified_acc: the share of examples proven robust (CROWN or the MILP), a LOWER bound, in %; robust_acc: the
    attacked robust accuracy (the headline, an UPPER bound); exact_acc: both meet (set only when no example is
    unknown); gap_points: robust_acc - certified_acc. counts: examples per status (STATUSES).
    exact_breaks: examples the MILP broke that every attack had left (verified, counted in robust_acc).
    rejected: MILP counterexamples that did not fool the model in float32 (their examples stay unknown).
    contradictions: examples proven robust AND broken by a verified attack (one side is wrong: the evaluation fails).
    """

    method: str  # crown | exact (what ran); the request is in `requested`
    requested: str
    certified_acc: float | None
    robust_acc: float
    exact_acc: float | None
    gap_points: float | None
    counts: dict[str, int]
    exact_breaks: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    contradictions: list[int] = field(default_factory=list)
    unknown_reasons: dict[str, int] = field(default_factory=dict)  # reason -> examples
    unknown_examples: list[UnknownExample] = field(default_factory=list)  # each undecided example and its reason
    methods: list[str] = field(default_factory=list)  # IBP, CROWN, big-M MILP
    limits: dict[str, Any] = field(default_factory=dict)  # time limit, budget, tolerances, sizes
    solver: str | None = None
    n_relus: int = 0
    n_unstable_mean: float = 0.0
    walk_gap: float = 0.0
    seconds: float = 0.0
    seconds_crown: float = 0.0
    seconds_exact: float = 0.0
    skipped: str | None = optional_field()  # why no bounds were computed (the model is not supported, ...)
    error: str | None = optional_field()  # the stage raised: nothing is certified
    extra: dict[str, Any] = extra_field()

    def line(self) -> str:
        """One line for people: the bracket, or why there is none."""
        if self.error:
            return f"BOUNDS FAILED: {self.error}"
        if self.skipped:
            return f"no certified bound ({self.requested}): {self.skipped}"
        text = f"robust {self.robust_acc:.1f} % (upper); certified >= {self.certified_acc:.1f} %"
        if self.exact_acc is not None:
            text += f"; exact {self.exact_acc:.1f} %"
        elif self.gap_points is not None:
            text += f"; bracket {self.gap_points:.1f} points wide ({self.counts.get('unknown', 0)} undecided)"
        return text

    @classmethod
    def not_computed(cls, requested: str, robust_acc: float, why: str, *, error: bool = False) -> BoundsReport:
        return cls(
            method="none",
            requested=requested,
            certified_acc=None,
            robust_acc=robust_acc,
            exact_acc=None,
            gap_points=None,
            counts={},
            skipped=None if error else why,
            error=why if error else None,
        )
