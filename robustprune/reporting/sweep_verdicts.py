"""The sweep report's verdict panel: each cell's evaluation verdict, the status of every health check, and why a
cell is not trusted. Read from the cell records (the checks' values, thresholds and advice are in each cell's own
score report)."""

from __future__ import annotations

from collections.abc import Iterable

from robustprune.render.format import NA, Table, fmt_pct
from robustprune.reporting.view import SweepView
from robustprune.scoring.audit import CONFIDENCE, clopper_pearson
from robustprune.scoring.health import VERDICTS, ordered_checks
from robustprune.scoring.verdict import RANK, RULE

STATUS_MARK = {"pass": "ok", "warn": "WARN", "fail": "FAIL", "skip": "-", "error": "ERROR"}
VERDICT_NOTE = (
    f"Each cell's evaluation verdict, by the rule: {RULE}. One column per health check (ok: passed, WARN, FAIL, "
    "-: did not apply); a FAIL an escalation resolved still shows FAIL here (the cell's own report says which "
    "escalation resolved it). 'battery %' is the battery's own worst case, 'worst %' includes what the health "
    "probes and escalations broke. 'audit' is how many survivors the reference attack audited in the cell and how "
    "many of them it broke (those count in 'worst %'). Each cell's report.md has every check's value, threshold and "
    "how to fix it."
)


def pooled_audit(view: SweepView) -> str | None:
    """The audits of every cell pooled: how many survivors the reference attacked and broke, and the
    Clopper-Pearson upper bound on the share of survivors it would break (None when no cell was audited)."""
    cells = [c for c in view.cells if c.record.audit_n_audited]
    if not cells:
        return None
    audited = sum(c.record.audit_n_audited or 0 for c in cells)
    broken = sum(c.record.audit_n_broken or 0 for c in cells)
    _, high = clopper_pearson(broken, audited)
    return (
        f"Audit, pooled over {len(cells)} cells: the reference attack broke {broken} of {audited} audited survivors "
        f"of the battery; at most {high:.1%} of survivors would fall to it ({CONFIDENCE:.0%} Clopper-Pearson)."
    )


def verdict_note(view: SweepView) -> str:
    """VERDICT_NOTE, plus the pooled audit when cells were audited."""
    pooled = pooled_audit(view)
    return VERDICT_NOTE + (f" {pooled}" if pooled else "")


def worst_verdict(verdicts: Iterable[str | None]) -> str | None:
    """The most serious verdict among `verdicts` (None when none is known)."""
    known = [v for v in verdicts if v in RANK]
    return max(known, key=RANK.__getitem__) if known else None


def verdict_text(verdict: str | None) -> str:
    """The verdict as the tables show it: upper case when it is not `trusted`, so it stands out."""
    if verdict is None:
        return NA
    return verdict if verdict == "trusted" else verdict.upper()


def verdict_counts(view: SweepView) -> str:
    counts = {v: sum(c.record.verdict == v for c in view.cells) for v in VERDICTS}
    unknown = sum(c.record.verdict is None for c in view.cells)
    text = ", ".join(f"{n} {v}" for v, n in counts.items())
    return text + (f", {unknown} without a verdict (scored before verdicts existed)" if unknown else "")


def _check_ids(view: SweepView) -> list[str]:
    present = {i for c in view.cells for i in c.record.checks}
    registered = [c.id for stage in ("model", "outcome", "bounds") for c in ordered_checks(stage)]
    return [i for i in registered if i in present] + sorted(present - set(registered))


def verdict_panel(view: SweepView) -> Table:
    """One row per cell: the verdict, the battery's and the final worst case, and every check's status."""
    ids = _check_ids(view)
    headers = ("recipe", "target", "seed", "verdict", "battery %", "worst %", "audit", *ids)
    rows = tuple(
        (
            c.recipe,
            f"{c.sparsity:g}",
            str(c.seed),
            verdict_text(c.record.verdict),
            fmt_pct(c.record.battery_robust_acc),
            fmt_pct(c.record.robust_acc),
            _audit_cell(c.record.audit_n_broken, c.record.audit_n_audited),
            *(STATUS_MARK.get(c.record.checks.get(i, ""), NA) for i in ids),
        )
        for c in view.cells
    )
    return Table(headers, rows, "lrrlrrr" + "l" * len(ids))


def _audit_cell(broken: int | None, audited: int | None) -> str:
    if audited is None:
        return NA
    return f"{broken}/{audited}" + (" BROKE" if broken else "")


def verdict_reasons(view: SweepView) -> list[tuple[str, str, list[str]]]:
    """(cell label, verdict, reasons) for every cell that is not trusted, most serious first."""
    flagged = [c for c in view.cells if c.record.verdict not in (None, "trusted")]
    flagged.sort(key=lambda c: -RANK[c.record.verdict])
    return [(c.label, c.record.verdict, list(c.record.verdict_reasons)) for c in flagged]
