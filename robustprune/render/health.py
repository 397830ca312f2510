"""The verdict panel of a score report: the verdict and why, every health check, every escalation."""

from __future__ import annotations

from robustprune.render.format import NA, Table, fmt_int, fmt_mapping, fmt_pct, fmt_seconds, fmt_value, make_table
from robustprune.scoring.result import ScoreResult

VERDICT_MEANING = {
    "trusted": "every health check passed or did not apply",
    "caution": "the number includes what escalations or the audit found, but the battery alone was not enough or a "
    "check warned",
    "untrusted": "the robust accuracy is an upper bound that may be loose: do not publish or gate on it",
}
STATUS_ORDER = {"error": 0, "fail": 1, "warn": 2, "pass": 3, "skip": 4}


def verdict_line(result: ScoreResult) -> str | None:
    """One line: the verdict in capitals and what it means; None for a result scored before verdicts existed."""
    if result.verdict is None:
        return None
    return f"VERDICT: {result.verdict.upper()} ({VERDICT_MEANING.get(result.verdict, '')})"


def verdict_reasons(result: ScoreResult) -> list[str]:
    return list(result.health.reasons) if result.health is not None else []


def verdict_rows(result: ScoreResult) -> list[tuple[str, str]]:
    health = result.health
    if health is None:
        return []
    counts = {s: sum(c.status == s for c in health.checks) for s in STATUS_ORDER}
    return [
        ("verdict", health.verdict),
        ("rule", health.rule or NA),
        ("checks", ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER)),
        ("robust accuracy, battery alone", fmt_pct(health.battery_robust_acc) + " %"),
        ("robust accuracy, with audit, probes and escalations", fmt_pct(result.robust_acc) + " %"),
        ("checks and escalations took", fmt_seconds(health.seconds) + " s"),
        *([("audit", audit_line(result))] if result.audit is not None else []),
        *([("model contract", result.model_contract.line())] if result.model_contract is not None else []),
        *(("model contract note", note) for note in (result.model_contract.notes if result.model_contract else [])),
        *((f"{f.check} (could not run)", f.message) for f in (result.stage_errors or [])),
    ]


def audit_line(result: ScoreResult) -> str | None:
    """The audit's one line (None when the battery has no audit)."""
    return result.audit.line() if result.audit is not None else None


def _status(check) -> str:
    if check.status == "fail" and check.resolved_by:
        return f"FAIL (resolved by {check.resolved_by})"
    return check.status.upper() if check.status in ("fail", "warn", "error") else check.status


def checks_table(result: ScoreResult) -> Table:
    """Every check in id order: its status, value, threshold, what it found and how to fix it."""
    checks = result.health.checks if result.health is not None else []
    rows = [
        (
            c.id,
            c.name,
            _status(c),
            NA if c.value is None else fmt_value(c.value),
            c.threshold or "-",
            c.message,
            c.how_to_fix or "-",
            ", ".join(c.escalations) or "-",
        )
        for c in checks
    ]
    headers = ("check", "what", "status", "value", "threshold", "finding", "how to fix", "escalated")
    return make_table(headers, rows, "llllllll")


def escalations_table(result: ScoreResult) -> Table:
    """Every escalation: what triggered it, what ran, what it broke (counted in the worst case), or why it could not."""
    escalations = result.health.escalations if result.health is not None else []
    rows = [
        (
            e.name,
            ", ".join(e.triggered_by),
            e.attack or "-",
            fmt_mapping(e.settings),
            fmt_int(e.n_attempted),
            fmt_int(e.n_broken),
            fmt_seconds(e.seconds),
            f"ERROR: {e.error}" if e.error else f"NOT RUN: {e.skipped}" if e.skipped else e.reason,
        )
        for e in escalations
    ]
    headers = ("escalation", "triggered by", "attack", "settings", "attempted", "broken", "seconds", "why")
    return make_table(headers, rows, "llllrrrl")


def escalation_lines(result: ScoreResult) -> list[str]:
    """One short line per escalation that ran or could not run, for the stdout summary."""
    escalations = result.health.escalations if result.health is not None else []
    return [
        f"{e.name} ({', '.join(e.triggered_by)}): "
        + (
            f"ERROR, {e.error}"
            if e.error
            else f"not run, {e.skipped}"
            if e.skipped
            else f"{e.attack} broke {e.n_broken} of {e.n_attempted}"
        )
        for e in escalations
    ]
