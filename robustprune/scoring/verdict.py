"""One verdict per score, derived from the health checks and escalations by a written rule.

- `untrusted`: gradient attacks could not run at all (S6) and no escalation repaired them, a check FAILED and no
  escalation resolved it, or a check that guards against gradient masking could not run (status `error`). The
  robust accuracy is then an upper bound that may be loose; `autoattack_acc` is left empty.
- `caution`: some check warned or could not run, a failure was resolved only by an escalation, an escalation broke
  examples the battery had left or could not run, the audit's reference attack broke a survivor, or the audit
  could not run: the number includes what those found, but the battery alone was not enough (or not shown to be).
- `trusted`: every check passed or did not apply. (A probe may still have broken an example or two below a
  check's threshold; it counts in the worst case like any attack's break.)
"""

from __future__ import annotations

from robustprune.scoring.health import CheckResult, EscalationRecord
from robustprune.scoring.health.base import MASKING_GUARDS
from robustprune.scoring.health.bounds_checks import EXACT_RESOLUTION
from robustprune.scoring.result import AuditReport

RULE = (
    "untrusted: gradient attacks could not run (S6) and no escalation repaired them, a check failed and no escalation "
    "resolved it, or a check that guards against gradient masking ("
    + ", ".join(MASKING_GUARDS)
    + ") could not run; caution: a check warned or could not run, a failure was resolved only by escalation, an "
    "escalation broke examples the battery left or could not run, or the audit's reference attack broke a survivor "
    "of the battery or could not run; trusted: otherwise"
)
RANK = {"trusted": 0, "caution": 1, "untrusted": 2}


def derive_verdict(
    checks: list[CheckResult], escalations: list[EscalationRecord], audit: AuditReport | None = None
) -> tuple[str, list[str]]:
    """(verdict, reasons, most serious first) by the rule in the module docstring."""
    untrusted, caution = [], []
    for check in checks:
        what = f"{check.id} ({check.name})"
        if check.status == "error" and check.id in MASKING_GUARDS:
            untrusted.append(
                f"{what} COULD NOT RUN ({check.message}): it guards against gradient masking, so masking may go "
                "undetected"
            )
        elif check.status == "error":
            caution.append(f"{what} could not run: {check.message}")
        elif check.status == "fail" and check.id == "S6" and check.resolved_by is None:
            untrusted.append(
                f"{what} FAILED: gradient attacks could not run; the robust accuracy is an upper bound that may be "
                "loose"
            )
        elif check.status == "fail" and check.resolved_by is None:
            untrusted.append(f"{what} FAILED: {check.message}")
        elif check.status == "fail" and check.resolved_by == EXACT_RESOLUTION:
            caution.append(f"{what} FAILED: {check.message}")
        elif check.status == "fail":
            caution.append(f"{what} FAILED, and passes under the {check.resolved_by} escalation")
        elif check.status == "warn":
            caution.append(f"{what} WARNED: {check.message}")
    caution += [f"escalation {e.name} could not run: {e.error}" for e in escalations if e.error]
    broke = [e for e in escalations if e.n_broken]
    if broke:
        caution.append(
            "escalations broke examples the battery left: " + ", ".join(f"{e.name} {e.n_broken}" for e in broke)
        )
    if audit is not None and audit.error:
        caution.append(f"the audit ({audit.attack}) could not run: {audit.error}")
    if audit is not None and audit.n_broken:
        caution.append(
            f"the audit's reference attack ({audit.attack}) broke {audit.n_broken} of {audit.n_audited} audited "
            "survivors the battery left (counted in the robust accuracy)"
        )
    if untrusted:
        return "untrusted", untrusted + caution
    if caution:
        return "caution", caution
    return "trusted", []


def worse(a: str | None, b: str | None) -> bool:
    """Whether verdict `b` is worse than verdict `a` (unknown verdicts compare as nothing)."""
    if a not in RANK or b not in RANK:
        return False
    return RANK[b] > RANK[a]
