"""How much of the truth a score computes beside its attacks: certified lower bounds (CROWN) and the exact answer
(big-M MILP) for models the verifier supports (robustprune/verify)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from robustprune.errors import UsageError
from robustprune.validation import check_float, escape

CERTIFY_METHODS = ("auto", "none", "crown", "exact")
# `auto` certifies with CROWN when the model is supported and small enough that the bounds cost little beside a
# `fast` score (bench/exact_vs_battery.py measures it); above this many ReLUs it certifies nothing unless asked.
AUTO_MAX_RELUS = 4_096


@dataclass(frozen=True)
class CertifySpec:
    """method: auto (CROWN where supported and cheap), none, crown, or exact (CROWN, then the MILP on what is left).
    exact_time_limit: seconds of MILP per example; exact_budget: seconds of MILP in all (what is not reached stays
    unknown); max_gap: a bracket wider than this many points makes the verdict caution (None: reported only)."""

    method: str = "auto"
    exact_time_limit: float = 10.0
    exact_budget: float = 600.0
    max_gap: float | None = None

    def __post_init__(self) -> None:
        if self.method not in CERTIFY_METHODS:
            raise UsageError(
                f"certify {escape(repr(self.method))} is not a method: choose one of {', '.join(CERTIFY_METHODS)}"
            )
        check_float(self.exact_time_limit, "--exact-time-limit", bound="exact_time_limit")
        check_float(self.exact_budget, "--exact-budget", bound="exact_budget")
        if self.max_gap is not None:
            check_float(self.max_gap, "--max-gap", bound="max_gap")

    @classmethod
    def coerce(cls, value: CertifySpec | str | dict[str, Any] | None) -> CertifySpec:
        """A spec from itself, a method name, or a table ({"method": ..., "exact_time_limit": ...})."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(method=value)
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"method", "exact_time_limit", "exact_budget", "max_gap"})
            if unknown:
                raise UsageError(
                    f"certify has no setting {escape(unknown[0])!r}: it takes method, exact_time_limit, exact_budget "
                    "and max_gap"
                )
            return cls(**value)
        raise UsageError(f"certify must be a method name or a table, got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "exact_time_limit": self.exact_time_limit,
            "exact_budget": self.exact_budget,
            "max_gap": self.max_gap,
        }
