"""Paired comparisons inside a sweep: each cell against its parent and the dense baseline of its seed, example by
example from the per-sample tables (exact two-sided McNemar test on the discordant examples)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from robustprune.errors import UsageError
from robustprune.metrics.paired import mcnemar_test
from robustprune.records import Record, optional_field
from robustprune.render.format import NA, Table, fmt_int, fmt_p, fmt_pct
from robustprune.reporting.view import SweepView
from robustprune.results.pairing import added_attacks, incomparable_reason
from robustprune.results.store import StoredCell
from robustprune.scoring.per_sample import CLEAN, WORST
from robustprune.scoring.result import ScoreResult


@dataclass
class PairedTest(Record):
    reference_pct: float | None
    cell_pct: float | None
    delta_pp: float | None
    lost: int | None  # right in the reference, wrong in the cell
    gained: int | None
    n: int | None
    p_value: float | None
    test: str | None

    @classmethod
    def of(cls, reference: np.ndarray, cell: np.ndarray) -> PairedTest:
        test = mcnemar_test(reference, cell)
        return cls(
            reference_pct=100.0 * float(reference.mean()),
            cell_pct=100.0 * float(cell.mean()),
            delta_pp=test["delta_pct"],
            lost=test["a_only"],
            gained=test["b_only"],
            n=test["n"],
            p_value=test["p_value"],
            test=test["test"],
        )

    @classmethod
    def missing(cls) -> PairedTest:
        return cls(None, None, None, None, None, None, None, None)


@dataclass
class PairedComparison(Record):
    cell: str
    cell_label: str
    against: str  # "parent", "dense baseline" or "parent = dense baseline"
    reference: str | None
    status: str = "ok"
    reference_label: str | None = optional_field()
    clean: PairedTest | None = optional_field()
    robust: PairedTest | None = optional_field()


def _reference_pairs(view: SweepView, cell: StoredCell) -> list[tuple[str, str | None]]:
    """(what, reference key) pairs for one cell: its parent and the dense baseline of its seed (merged if equal)."""
    parent = cell.record.parent_key
    baseline = next(
        (c.key for c in view.cells if c.recipe == view.parent_recipe and c.seed == cell.seed and c.sparsity == 0), None
    )
    if cell.recipe == view.parent_recipe and cell.sparsity == 0:
        baseline = None  # the dense baseline itself
    pairs = []
    if parent:
        pairs.append(("parent = dense baseline" if parent == baseline else "parent", parent))
    if baseline and baseline != parent and baseline != cell.key:
        pairs.append(("dense baseline", baseline))
    return pairs


def _paired_inputs(cell: StoredCell) -> tuple[ScoreResult, dict[str, np.ndarray]] | str:
    """(the result with a per-sample table cut down to its labels, the correct vectors), or why they are missing.

    Only what the comparisons need is kept: a large sweep's full per-sample tables would not fit in memory at once.
    """
    try:
        result = cell.result(cache=False)
        vectors = result.correct_vectors()
        result.per_sample = result.per_sample.labels_only()
        return result, vectors
    except UsageError as exc:  # a missing / damaged score file: say so, never guess
        return str(exc)


def paired_comparisons(view: SweepView) -> list[PairedComparison]:
    """Each cell against its parent and the dense baseline, example by example (exact McNemar, two-sided)."""
    by_key = view.sweep.by_key()
    inputs: dict[str, tuple[ScoreResult, dict[str, np.ndarray]] | str] = {}

    def get(cell: StoredCell) -> tuple[ScoreResult, dict[str, np.ndarray]] | str:
        if cell.key not in inputs:
            inputs[cell.key] = _paired_inputs(cell)
        return inputs[cell.key]

    out = []
    for cell in view.cells:
        for against, ref_key in _reference_pairs(view, cell):
            entry = PairedComparison(cell=cell.key, cell_label=cell.label, against=against, reference=ref_key)
            out.append(entry)
            ref = by_key.get(ref_key) if ref_key else None
            if ref is None:
                entry.status = "not comparable: reference cell not in this sweep"
                continue
            entry.reference_label = ref.label
            ref_in, cell_in = get(ref), get(cell)
            if isinstance(ref_in, str) or isinstance(cell_in, str):
                entry.status = f"not comparable: {ref_in if isinstance(ref_in, str) else cell_in}"
                continue
            (ref_result, ref_vec), (result, vec) = ref_in, cell_in
            reason = incomparable_reason(
                ref_result,
                result,
                ref.record.config.data_fingerprint,
                cell.record.config.data_fingerprint,
                allow_added_attacks=True,
            )
            if reason:
                entry.status = f"not comparable: {reason}"
                continue
            added = added_attacks(ref_result, result)
            if added:  # e.g. a randomized cell's adaptive attack: only the worst case is like for like
                entry.status = f"ok; worst case over the reference's attacks plus {', '.join(added)}"
            entry.clean = PairedTest.of(ref_vec[CLEAN], vec[CLEAN])
            entry.robust = PairedTest.of(ref_vec[WORST], vec[WORST])
    return out


def comparisons_table(comparisons: list[PairedComparison]) -> Table:
    rows = []
    for e in comparisons:
        c, r = e.clean or PairedTest.missing(), e.robust or PairedTest.missing()
        rows.append(
            (
                e.cell_label,
                e.against,
                e.reference_label or e.reference or NA,
                fmt_int(r.n),
                _signed(c.delta_pp),
                fmt_p(c.p_value),
                fmt_pct(r.reference_pct),
                fmt_pct(r.cell_pct),
                _signed(r.delta_pp),
                fmt_int(r.lost),
                fmt_int(r.gained),
                fmt_p(r.p_value),
                e.status,
            )
        )
    headers = (
        "cell",
        "against",
        "reference",
        "n",
        "clean Δ pp",
        "clean p",
        "robust ref %",
        "robust %",
        "robust Δ pp",
        "lost",
        "gained",
        "McNemar p",
        "status",
    )
    return Table(headers, tuple(rows), "lllrrrrrrrrrl")


def _signed(value: Any) -> str:
    return f"{value:+.2f}" if isinstance(value, int | float) else NA
