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
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from robustprune.check.report import FAIL, NOT_COMPARABLE, PASS, Comparison, Row
from robustprune.check.rule import ALPHA, CALIBRATION_TOLERANCE, NLL_TOLERANCE, TOLERANCE
from robustprune.errors import UsageError
from robustprune.metrics.paired import one_sided_drop_pvalue
from robustprune.results.pairing import incomparable_reason
from robustprune.results.store import StoredCell, load_cells
from robustprune.scoring.bounds_report import PROVEN
from robustprune.scoring.result import CalibrationMetric, ScoreResult
from robustprune.scoring.verdict import worse

CERTIFIED = "certified acc (lower bound)"
CALIBRATION = (
    ("ECE clean", "clean", "ece"),
    ("ECE adv", "adversarial", "ece"),
    ("NLL clean", "clean", "nll"),
    ("NLL adv", "adversarial", "nll"),
)


def _calibration(result: ScoreResult, side: str, metric: str) -> CalibrationMetric:
    summary = result.calibration.clean if side == "clean" else result.calibration.adversarial
    return summary.metric(metric)


def compare_results(
    baseline: ScoreResult,
    new: ScoreResult,
    *,
    cell: str = "score",
    tolerance: float = TOLERANCE,
    alpha: float = ALPHA,
    calibration_tolerance: float = CALIBRATION_TOLERANCE,
    nll_tolerance: float = NLL_TOLERANCE,
    baseline_fingerprint: str | None = None,
    new_fingerprint: str | None = None,
) -> list[Row]:
    """Every comparison row for one pair of score results (one NOT-COMPARABLE row when they cannot be paired)."""
    reason = incomparable_reason(baseline, new, baseline_fingerprint, new_fingerprint)
    if reason:
        return [Row(cell, "*", None, None, None, None, NOT_COMPARABLE, reason)]
    try:
        b_vec, n_vec = baseline.correct_vectors(), new.correct_vectors()
    except KeyError as exc:  # one damaged cell is reported as such; the other cells are still compared
        return [Row(cell, "*", None, None, None, None, NOT_COMPARABLE, f"the per-sample table has no column {exc}")]
    rows = _verdict_rows(baseline, new, cell)
    certified = _certified_vectors(baseline, new)
    if isinstance(certified, str):
        rows.append(Row(cell, CERTIFIED, None, None, None, None, NOT_COMPARABLE, certified))
    elif certified is not None:
        b_vec[CERTIFIED], n_vec[CERTIFIED] = certified
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
        b_metric, n_metric = _calibration(baseline, side, key), _calibration(new, side, key)
        b, n = b_metric.value, n_metric.value
        b_bins, n_bins = (b_metric.binning, b_metric.n_bins), (n_metric.binning, n_metric.n_bins)
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


def _certified_vectors(baseline: ScoreResult, new: ScoreResult) -> tuple[Any, Any] | str | None:
    """Per example "proven robust" (certified or proved) on both sides, paired like the accuracies; None when the
    baseline has no bounds, a reason when only the new results lack them."""
    b_status = baseline.per_sample.status if baseline.per_sample is not None else None
    if b_status is None:
        return None
    n_status = new.per_sample.status if new.per_sample is not None else None
    if n_status is None:
        return "the baseline has certified bounds and the new results have none (score with --certify)"
    return np.isin(b_status.astype(str), PROVEN), np.isin(n_status.astype(str), PROVEN)


def _verdict_rows(baseline: ScoreResult, new: ScoreResult, cell: str) -> list[Row]:
    """The evaluation verdict: FAIL when it got worse (a baseline scored before verdicts existed has none to
    compare, and gets no row)."""
    if baseline.verdict is None:
        return []
    if new.verdict is None:
        return [Row(cell, "verdict", baseline.verdict, None, None, None, NOT_COMPARABLE, "the results have no verdict")]
    if worse(baseline.verdict, new.verdict):
        reasons = new.health.reasons if new.health is not None else []
        why = f": {reasons[0]}" if reasons else ""
        return [Row(cell, "verdict", baseline.verdict, new.verdict, None, None, FAIL, f"verdict got worse{why}")]
    return [Row(cell, "verdict", baseline.verdict, new.verdict, None, None, PASS)]


def _cell_result(cell: StoredCell) -> ScoreResult | str:
    try:
        # One pair in memory at a time, however large the sweep; a result without its per-sample table is loaded
        # so that its row can say so (not comparable), rather than refusing the whole check.
        return cell.result(cache=False, require_per_sample=False)
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
    results: str | Path | dict[str, Any] | ScoreResult,
    baseline: str | Path | dict[str, Any] | ScoreResult,
    *,
    tolerance: float = TOLERANCE,
    alpha: float = ALPHA,
    calibration_tolerance: float = CALIBRATION_TOLERANCE,
    nll_tolerance: float = NLL_TOLERANCE,
    allow_missing: bool = False,
) -> Comparison:
    """Compare `results` with `baseline`: each a sweep directory / sweep results.json, a score results.json (or the
    directory holding one), a loaded score document or a ScoreResult. Cells pair by (recipe, target sparsity, seed);
    two single scores form one pair.

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
        new_result, base_result = _cell_result(new_cell), _cell_result(base_cell)
        if isinstance(new_result, str) or isinstance(base_result, str):
            reason = new_result if isinstance(new_result, str) else base_result
            rows.append(Row(label, "*", None, None, None, None, NOT_COMPARABLE, str(reason)))
            continue
        fingerprints = (
            (base_cell.record.config.data_fingerprint, new_cell.record.config.data_fingerprint)
            if new_kind == "sweep"
            else (None, None)
        )
        rows += compare_results(
            base_result,
            new_result,
            cell=label,
            tolerance=tolerance,
            alpha=alpha,
            calibration_tolerance=calibration_tolerance,
            nll_tolerance=nll_tolerance,
            baseline_fingerprint=fingerprints[0],
            new_fingerprint=fingerprints[1],
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
