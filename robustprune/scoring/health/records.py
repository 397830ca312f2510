"""What the health checks and escalations leave in a result: plain records, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustprune.records import Record, extra_field, optional_field

STATUSES = ("pass", "warn", "fail", "skip", "error")
VERDICTS = ("trusted", "caution", "untrusted")


@dataclass
class CheckResult(Record):
    """One check's finding: `value` measured against `threshold` gives `status`."""

    id: str
    name: str
    status: str  # pass | warn | fail | skip | error (the check could not run: message says why)
    value: float | int | str | None
    threshold: str
    message: str
    how_to_fix: str
    escalations: list[str] = field(default_factory=list)  # escalations this check triggered
    resolved_by: str | None = None  # the escalation under which the re-run check passes (a failure it repaired)
    extra: dict[str, Any] = extra_field()


@dataclass
class EscalationRecord(Record):
    """An attack the engine added because a check said the battery may have failed; what it broke counts."""

    name: str  # the escalation (bpda, logit_rescaling, eot, more_queries, more_steps, transfer)
    label: str  # its column in the per-sample table
    attack: str  # the registered attack that ran
    settings: dict[str, Any]
    triggered_by: list[str]  # check ids
    reason: str
    n_attempted: int = 0
    n_broken: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    error: str | None = optional_field()  # it raised: one line, and it resolved nothing
    extra: dict[str, Any] = extra_field()


@dataclass
class HealthReport(Record):
    """Every check, every escalation, and the verdict derived from them by the rule in scoring/verdict.py."""

    verdict: str  # trusted | caution | untrusted
    reasons: list[str]  # why the verdict is what it is, most serious first
    checks: list[CheckResult]
    escalations: list[EscalationRecord]
    battery_robust_acc: float  # the battery's own worst case, before probes and escalations
    seconds: float  # checks, probes and escalations together
    rule: str = ""
    extra: dict[str, Any] = extra_field()

    def check(self, check_id: str) -> CheckResult | None:
        return next((c for c in self.checks if c.id == check_id), None)

    def failing(self) -> list[CheckResult]:
        """Checks that warned, failed or could not run, in id order."""
        return [c for c in self.checks if c.status in ("warn", "fail", "error")]
