"""The outcome of `check`: one row per comparison, the verdict, and its fixed-width and JSON renderings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from robustprune.jsonio import to_jsonable
from robustprune.render.format import Table, fmt_p
from robustprune.render.text import format_fixed

PASS, FAIL, NOT_COMPARABLE = "PASS", "FAIL", "NOT-COMPARABLE"

UNITS_NOTE = (
    "accuracies in %, deltas in percentage points (new - baseline); "
    "p (drop): one-sided exact McNemar p-value that the new result is worse."
)


@dataclass(frozen=True)
class Row:
    cell: str
    metric: str
    baseline: float | str | None  # a string for the verdict row
    new: float | str | None
    delta: float | None  # new - baseline: percentage points for accuracies, raw units for calibration
    p_value: float | None  # one-sided exact paired test that new is worse; None where no test applies
    status: str  # PASS / FAIL / NOT-COMPARABLE
    note: str = ""


@dataclass
class Comparison:
    rows: list[Row]
    added: list[str]
    missing: list[str]
    tolerance: float
    alpha: float
    calibration_tolerance: float
    nll_tolerance: float
    allow_missing: bool = False
    results: str = ""
    baseline: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status != PASS]

    @property
    def passed(self) -> bool:
        """No FAIL or NOT-COMPARABLE row, something was compared, and no baseline cell went missing (unless allowed)."""
        return bool(self.rows) and not self.failed and (self.allow_missing or not self.missing)

    def verdict(self) -> str:
        fails = sum(r.status == FAIL for r in self.rows)
        incomparable = len({r.cell for r in self.rows if r.status == NOT_COMPARABLE})
        compared = sum(r.status != NOT_COMPARABLE for r in self.rows)
        parts = [f"{compared} comparisons", f"{fails} failed"]
        if incomparable:
            parts.append(f"{incomparable} cell{'s' * (incomparable != 1)} not comparable")
        if self.missing:
            parts.append(
                f"{len(self.missing)} baseline cell{'s' * (len(self.missing) != 1)} missing"
                + (" (allowed)" if self.allow_missing else "")
            )
        if self.added:
            parts.append(f"{len(self.added)} new cell{'s' * (len(self.added) != 1)} not in the baseline")
        if not compared:
            parts.append("nothing was compared")
        return ("PASS: " if self.passed else "FAIL: ") + ", ".join(parts)

    def rule(self) -> str:
        nll = (
            f"NLL by more than {self.nll_tolerance:g}"
            if self.nll_tolerance != self.calibration_tolerance
            else "NLL by more than the same"
        )
        return (
            f"rule: an accuracy FAILS when it drops by more than {self.tolerance:g} pp (percentage points) AND "
            f"the one-sided exact paired test on the same examples gives p < {self.alpha:g}; calibration FAILS "
            f"when ECE rises by more than {self.calibration_tolerance:g} or {nll} (no paired test is applied "
            "to calibration); the evaluation verdict FAILS when it is worse than the baseline's "
            "(trusted < caution < untrusted)."
        )

    def render(self) -> str:
        """A fixed-width table of every comparison, the added/missing cells, and a one-line verdict (last line)."""
        headers = ("cell", "metric", "baseline", "new", "delta", "p (drop)", "status", "note")
        body = [
            (
                r.cell,
                r.metric,
                _fmt_value(r.metric, r.baseline),
                _fmt_value(r.metric, r.new),
                _fmt_delta(r.metric, r.delta),
                fmt_p(r.p_value, missing="-"),
                r.status,
                r.note,
            )
            for r in self.rows
        ]
        lines = [
            f"robustprune check: {self.results or '<results>'} against baseline {self.baseline or '<baseline>'}",
            self.rule(),
            UNITS_NOTE,
            "",
        ]
        lines += format_fixed(Table(headers, tuple(body), "llrrrrll")) if body else ["(no comparisons)"]
        for title, cells in (
            ("added cells (in the results, not in the baseline; not compared)", self.added),
            ("missing cells (in the baseline, not in the results)", self.missing),
        ):
            if cells:
                lines += ["", f"{title}:", *(f"  {c}" for c in cells)]
        lines += [*([""] + self.notes if self.notes else []), "", self.verdict()]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdict": self.verdict(),
            "rule": self.rule(),
            "results": self.results,
            "baseline": self.baseline,
            "tolerance_pp": self.tolerance,
            "alpha": self.alpha,
            "calibration_tolerance": self.calibration_tolerance,
            "nll_tolerance": self.nll_tolerance,
            "paired_test": "one-sided exact binomial on discordant pairs (McNemar); none for calibration",
            "allow_missing": self.allow_missing,
            "rows": [_json_row(r) for r in self.rows],
            "added": self.added,
            "missing": self.missing,
        }


def _json_row(row: Row) -> dict[str, Any]:
    return to_jsonable(asdict(row))


def _is_accuracy(metric: str) -> bool:
    return "acc" in metric


def _fmt_value(metric: str, value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.2f}" if _is_accuracy(metric) else f"{value:.4f}"


def _fmt_delta(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if _is_accuracy(metric) else f"{value:+.4f}"
