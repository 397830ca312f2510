"""The bracket in a score report: the certified lower bound beside the attacked upper bound, the exact value where
the MILP decided every example, and how many examples each status holds."""

from __future__ import annotations

from robustprune.render.format import fmt_pct, fmt_seconds
from robustprune.scoring.bounds_report import STATUSES
from robustprune.scoring.result import ScoreResult

BOUNDS_NOTE = (
    "Every attacked robust accuracy is an UPPER bound (the examples no attack broke). The certified accuracy is a "
    "LOWER bound: examples proven robust by CROWN (linear relaxation, float64) or by the big-M MILP (exact). The truth "
    "lies between; where nothing is left undecided the two meet and the exact value is given. MILP counterexamples "
    "count only after they fool the model itself and pass the threat model's verification."
)


def bracket_line(result: ScoreResult) -> str | None:
    """The first line of a summary: the bracket, or why the bracket that was asked for is missing (None: none was
    asked for, or --certify auto found the model unsupported)."""
    bounds = result.bounds
    if bounds is None or (bounds.method == "none" and bounds.requested in ("auto", "none") and not bounds.error):
        return None
    return bounds.line()


def bounds_rows(result: ScoreResult) -> list[tuple[str, str]]:
    bounds = result.bounds
    if bounds is None:
        return []
    if bounds.method == "none":
        return [("certify", bounds.requested), ("no bounds", bounds.error or bounds.skipped or "")]
    counts = ", ".join(f"{bounds.counts.get(status, 0)} {status}" for status in STATUSES)
    rows = [
        ("attacked robust accuracy (upper bound)", f"{fmt_pct(bounds.robust_acc)} %"),
        ("certified robust accuracy (lower bound)", f"{fmt_pct(bounds.certified_acc)} %"),
        ("exact robust accuracy", f"{fmt_pct(bounds.exact_acc)} %" if bounds.exact_acc is not None else "undecided"),
        ("bracket", f"{bounds.gap_points:.2f} points"),
        ("examples", counts),
        ("methods", ", ".join(bounds.methods) + f" (asked: {bounds.requested})"),
        ("network", f"{bounds.n_relus:,} ReLUs, {bounds.n_unstable_mean:.1f} unstable per example on average"),
        ("walk vs model", f"logits agree within {bounds.walk_gap:.2g} on every scored example"),
        ("time", f"CROWN {fmt_seconds(bounds.seconds_crown)} s, MILP {fmt_seconds(bounds.seconds_exact)} s"),
    ]
    if bounds.solver:
        limits = bounds.limits
        spent = " (spent)" if limits.get("budget_exhausted") else ""
        budget = f"{limits.get('exact_time_limit')} s per example, {limits.get('exact_budget')} s in all{spent}"
        rows.append(("solver", f"{bounds.solver}; {budget}"))
    if bounds.exact_breaks:
        rows.append(("broken by the MILP only", ", ".join(map(str, bounds.exact_breaks[:20]))))
    if bounds.contradictions:
        rows.append(("PROVEN AND BROKEN", ", ".join(map(str, bounds.contradictions[:20]))))
    rows += [(f"unknown: {reason}", str(n)) for reason, n in bounds.unknown_reasons.items()]
    return rows
