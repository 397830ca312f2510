"""`check`: compare new results with a stored baseline and fail only when robustness dropped by more than chance.

Both sides are scored on the same fixed examples, so every accuracy comparison is paired: a metric FAILS when it drops
by more than `tolerance` percentage points AND an exact one-sided test on the discordant examples (McNemar's
binomial on the examples one side got right and the other wrong) says the drop is unlikely under chance
(p < alpha). Either condition alone is not enough: a large drop on 40 examples may be noise, and a tiny drop on
10,000 examples may be significant but irrelevant. Calibration (ECE, NLL) has no paired test here: it fails when
it rises by more than its tolerance, and the output says so.

Cells are paired by (recipe, target sparsity, seed). Cells scored under a different battery, threat model or on
different examples are NOT-COMPARABLE, which counts as a failure: they are never compared silently.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from robustprune.check_rule import ALPHA, CALIBRATION_TOLERANCE, NLL_TOLERANCE, TOLERANCE
from robustprune.errors import UsageError
from robustprune.metrics.paired import one_sided_drop_pvalue
from robustprune.reporting.tables import Table, fmt_p
from robustprune.reporting.text import format_fixed
from robustprune.sweepdata import StoredCell, load_cells

PASS, FAIL, NOT_COMPARABLE = "PASS", "FAIL", "NOT-COMPARABLE"
CLEAN, WORST = "clean acc", "robust acc (worst case)"
CALIBRATION = (
    ("ECE clean", "clean", "ece"),
    ("ECE adv", "adversarial", "ece"),
    ("NLL clean", "clean", "nll"),
    ("NLL adv", "adversarial", "nll"),
)


UNITS_NOTE = (
    "accuracies in %, deltas in percentage points (new - baseline); "
    "p (drop): one-sided exact McNemar p-value that the new result is worse."
)


def attack_metric(label: str) -> str:
    return f"robust acc after {label}"


# ---------------------------------------------------------------- per-sample vectors


def correct_vectors(doc: dict[str, Any]) -> dict[str, np.ndarray]:
    """Metric name -> per-example "still correct" vector, from the per-sample table (the primary result).

    After attack L: correct on clean data and not broken by any attack up to and including L in battery order (the
    order of doc["attacks"]: per_sample["attacks"] is a JSON object whose key order is not the battery's).
    """
    table = doc.get("per_sample")
    if not isinstance(table, dict) or "clean_correct" not in table or "broken" not in table:
        raise UsageError(
            "the result has no per-sample table (per_sample.clean_correct / broken); "
            "paired comparisons need it: rescore with robustprune >= 0.1"
        )
    clean = np.asarray(table["clean_correct"], dtype=bool)
    vectors = {CLEAN: clean}
    broken = ~clean
    for attack in doc.get("attacks") or []:
        label = str(attack.get("label"))
        column = (table.get("attacks") or {}).get(label)
        if column is None:
            raise UsageError(f"the per-sample table has no column for attack {label!r}")
        broken = broken | np.asarray(column["broken"], dtype=bool)
        vectors[attack_metric(label)] = ~broken
    vectors[WORST] = ~np.asarray(table["broken"], dtype=bool)
    return vectors


# ---------------------------------------------------------------- comparability


def _battery(doc: dict[str, Any]) -> tuple[Any, Any]:
    """(threat, attacks as resolved) of a score document; the battery's name and description do not matter."""
    resolved = (doc.get("provenance") or {}).get("battery") or {}
    threat = (doc.get("norm"), doc.get("eps"))
    attacks = [
        (a.get("name"), a.get("label"), sorted(a.get("norms") or []), a.get("params") or {})
        for a in resolved.get("attacks") or []
    ]
    if not attacks:  # an older document without the resolved battery: the attacks that ran, by label
        attacks = [(a.get("name"), a.get("label")) for a in doc.get("attacks") or []]
    return threat, attacks


def added_attacks(baseline: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Labels of the attacks `new` ran beyond `baseline`'s, when it ran every one of those unchanged; else []."""
    b_attacks, n_attacks = _battery(baseline)[1], _battery(new)[1]
    if len(n_attacks) <= len(b_attacks) or any(a not in n_attacks for a in b_attacks):
        return []
    return [str(a[1]) for a in n_attacks if a not in b_attacks]


def _attack_names(attacks: list[tuple]) -> str:
    return "[" + ", ".join(str(a[1]) for a in attacks) + "]"


def incomparable_reason(
    baseline: dict[str, Any],
    new: dict[str, Any],
    baseline_config: dict[str, Any] | None = None,
    new_config: dict[str, Any] | None = None,
    *,
    allow_added_attacks: bool = False,
) -> str | None:
    """Why two score documents cannot be compared example by example, or None when they can.

    `allow_added_attacks`: `new` may run every attack of `baseline` plus more (the adaptive attack a randomized
    model gets). Its worst case can then only be lower, so a worst-case comparison cannot flatter `new`.
    """
    for side, doc in (("baseline", baseline), ("new", new)):
        if not isinstance(doc.get("per_sample"), dict):
            return f"no per-sample table in the {side} result (paired tests need it; rescore it)"
    reasons = []
    (b_threat, b_attacks), (n_threat, n_attacks) = _battery(baseline), _battery(new)
    if b_threat != n_threat:
        reasons.append(f"threat model differs ({b_threat[0]} eps={b_threat[1]} vs {n_threat[0]} eps={n_threat[1]})")
    if b_attacks != n_attacks and not (allow_added_attacks and added_attacks(baseline, new)):
        reasons.append(
            f"battery differs ({baseline.get('battery')} {_attack_names(b_attacks)} vs "
            f"{new.get('battery')} {_attack_names(n_attacks)}, or their settings)"
        )
    fingerprints = [((baseline.get("data") or {}).get("fingerprint"), (new.get("data") or {}).get("fingerprint"))]
    if baseline_config is not None and new_config is not None:
        fingerprints.append((baseline_config.get("data_fingerprint"), new_config.get("data_fingerprint")))
    if any(b != n for b, n in fingerprints) or baseline.get("n_examples") != new.get("n_examples"):
        reasons.append(
            f"data fingerprint differs (different examples: n={baseline.get('n_examples')} vs "
            f"n={new.get('n_examples')})"
        )
    elif (baseline.get("per_sample") or {}).get("label") != (new.get("per_sample") or {}).get("label"):
        reasons.append("per-sample labels differ although the data fingerprints match")
    return "; ".join(reasons) or None


# ---------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class Row:
    cell: str
    metric: str
    baseline: float | None
    new: float | None
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
            "to calibration)."
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
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(row).items()}


def _is_accuracy(metric: str) -> bool:
    return "acc" in metric


def _fmt_value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if _is_accuracy(metric) else f"{value:.4f}"


def _fmt_delta(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if _is_accuracy(metric) else f"{value:+.4f}"


def _calibration_value(doc: dict[str, Any], side: str, metric: str) -> tuple[float | None, Any]:
    entry = ((doc.get("calibration") or {}).get(side) or {}).get(metric) or {}
    return entry.get("value"), (entry.get("binning"), entry.get("n_bins"))


def compare_documents(
    baseline: dict[str, Any],
    new: dict[str, Any],
    *,
    cell: str = "score",
    tolerance: float = TOLERANCE,
    alpha: float = ALPHA,
    calibration_tolerance: float = CALIBRATION_TOLERANCE,
    nll_tolerance: float = NLL_TOLERANCE,
    baseline_config: dict[str, Any] | None = None,
    new_config: dict[str, Any] | None = None,
) -> list[Row]:
    """Every comparison row for one pair of score documents (one NOT-COMPARABLE row when they cannot be paired)."""
    reason = incomparable_reason(baseline, new, baseline_config, new_config)
    if reason:
        return [Row(cell, "*", None, None, None, None, NOT_COMPARABLE, reason)]
    try:
        b_vec, n_vec = correct_vectors(baseline), correct_vectors(new)
    except UsageError as exc:  # one damaged cell is reported as such; the other cells are still compared
        return [Row(cell, "*", None, None, None, None, NOT_COMPARABLE, str(exc))]
    rows = []
    for metric, b in b_vec.items():
        n = n_vec[metric]
        b_acc, n_acc = 100.0 * float(b.mean()), 100.0 * float(n.mean())
        delta = n_acc - b_acc
        p = one_sided_drop_pvalue(b, n)
        big, significant = -delta > tolerance, p < alpha
        status = FAIL if big and significant else PASS
        note = (
            "dropped beyond tolerance, more than chance"
            if status == FAIL
            else "dropped beyond tolerance, within chance"
            if big
            else "significant drop within tolerance"
            if significant and delta < 0
            else ""
        )
        rows.append(Row(cell, metric, b_acc, n_acc, delta, p, status, note))
    for metric, side, key in CALIBRATION:
        (b, b_bins), (n, n_bins) = _calibration_value(baseline, side, key), _calibration_value(new, side, key)
        limit = calibration_tolerance if key == "ece" else nll_tolerance
        if b is None or n is None or b_bins != n_bins:
            why = "binning differs" if b_bins != n_bins else "value missing"
            rows.append(Row(cell, metric, b, n, None, None, NOT_COMPARABLE, why))
            continue
        delta = n - b
        status = FAIL if delta > limit else PASS
        rows.append(
            Row(
                cell,
                metric,
                b,
                n,
                delta,
                None,
                status,
                f"rose by more than {limit:g}" if status == FAIL else "no paired test",
            )
        )
    return rows


def _cell_documents(cell: StoredCell) -> dict[str, Any] | str:
    try:
        # One pair in memory at a time, however large the sweep; a result without its per-sample table is loaded
        # so that its row can say so (not comparable), rather than refusing the whole check.
        return cell.document(cache=False, require_per_sample=False)
    except UsageError as exc:
        return f"score document unreadable: {exc}"


def _by_match_key(cells: list[StoredCell], name: str) -> dict[tuple, StoredCell]:
    """Cells by (recipe, sparsity, seed); two cells on one key would make the pairing arbitrary, so refuse."""
    by: dict[tuple, StoredCell] = {}
    for cell in cells:
        if cell.match_key in by:
            raise UsageError(
                f"{name} holds two cells for {cell.label} ({by[cell.match_key].key} and {cell.key}); "
                "check needs one result per recipe, sparsity and seed: point it at a single sweep's output"
            )
        by[cell.match_key] = cell
    return by


def compare(
    results: str | Path | dict[str, Any],
    baseline: str | Path | dict[str, Any],
    *,
    tolerance: float = TOLERANCE,
    alpha: float = ALPHA,
    calibration_tolerance: float = CALIBRATION_TOLERANCE,
    nll_tolerance: float = NLL_TOLERANCE,
    allow_missing: bool = False,
) -> Comparison:
    """Compare `results` with `baseline`: each a sweep directory / sweep results.json, a score results.json (or the
    directory holding one), or a loaded score document. Cells pair by (recipe, target sparsity, seed); two single
    scores form one pair.

    Args:
        tolerance: an accuracy may drop by up to this many percentage points before the paired test is consulted.
        alpha: significance level of the one-sided paired test.
        calibration_tolerance: the largest allowed rise of ECE.
        nll_tolerance: the largest allowed rise of NLL.
        allow_missing: pass even when baseline cells are absent from the results (they are still listed).
    """
    limits = (
        ("tolerance", tolerance),
        ("calibration_tolerance", calibration_tolerance),
        ("nll_tolerance", nll_tolerance),
    )
    for name, value in limits:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a number >= 0, got {value!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise UsageError(f"--alpha must lie strictly between 0 and 1, got {alpha!r}")
    new_kind, new_cells, new_name = load_cells(results, require_per_sample=False)
    base_kind, base_cells, base_name = load_cells(baseline, require_per_sample=False)
    if new_kind != base_kind:
        raise UsageError(
            f"cannot compare a {new_kind} ({new_name}) with a {base_kind} baseline ({base_name}): "
            "compare a sweep with a sweep or a score with a score"
        )
    new_by, base_by = _by_match_key(new_cells, new_name), _by_match_key(base_cells, base_name)
    if new_kind == "score":  # one cell each: pair them whatever their seeds say
        new_by, base_by = {("score",): new_cells[0]}, {("score",): base_cells[0]}
    rows: list[Row] = []
    for key in sorted(set(new_by) & set(base_by)):
        new_cell, base_cell = new_by[key], base_by[key]
        label = base_cell.label if new_kind == "sweep" else "score"
        new_doc, base_doc = _cell_documents(new_cell), _cell_documents(base_cell)
        if isinstance(new_doc, str) or isinstance(base_doc, str):
            reason = new_doc if isinstance(new_doc, str) else base_doc
            rows.append(Row(label, "*", None, None, None, None, NOT_COMPARABLE, str(reason)))
            continue
        configs = (base_cell.config, new_cell.config) if new_kind == "sweep" else (None, None)
        rows += compare_documents(
            base_doc,
            new_doc,
            cell=label,
            tolerance=tolerance,
            alpha=alpha,
            calibration_tolerance=calibration_tolerance,
            nll_tolerance=nll_tolerance,
            baseline_config=configs[0],
            new_config=configs[1],
        )
    added = [new_by[k].label for k in sorted(set(new_by) - set(base_by))]
    missing = [base_by[k].label for k in sorted(set(base_by) - set(new_by))]
    return Comparison(
        rows,
        added,
        missing,
        float(tolerance),
        float(alpha),
        float(calibration_tolerance),
        float(nll_tolerance),
        allow_missing,
        str(new_name),
        str(base_name),
    )


def check_main(
    results: str | Path,
    baseline: str | Path,
    tolerance: float = TOLERANCE,
    alpha: float = ALPHA,
    calibration_tolerance: float = CALIBRATION_TOLERANCE,
    *,
    nll_tolerance: float = NLL_TOLERANCE,
    allow_missing: bool = False,
    json_out: str | Path | None = None,
    stream: TextIO | None = None,
) -> int:
    """`robustprune check`: print the comparison table and verdict; 0 when it passes, 1 when it fails.

    Bad input (missing files, a sweep against a score, bad tolerances) raises UsageError (exit 2 in the CLI).
    `json_out` also writes Comparison.to_dict() there, atomically.
    """
    comparison = compare(
        results,
        baseline,
        tolerance=tolerance,
        alpha=alpha,
        calibration_tolerance=calibration_tolerance,
        nll_tolerance=nll_tolerance,
        allow_missing=allow_missing,
    )
    (stream or sys.stdout).write(comparison.render())
    if json_out is not None:
        from robustprune.atomic import write_json

        write_json(json_out, comparison.to_dict())
    return 0 if comparison.passed else 1
