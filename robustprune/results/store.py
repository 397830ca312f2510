"""Reading stored results back: a sweep directory (or its results.json) and single score documents, as cells.

Only reads files; never recomputes a model or an attack (no matplotlib, no jinja2: `check` and the pytest plugin
use it too). A sweep whose results.json is missing (it was stopped before the end) is read from its finished
cells' `cell.json` files, so a partial sweep can still be reported and compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustprune.config import SweepSpec, sweep_spec_from_dict
from robustprune.errors import UsageError
from robustprune.jsonio import read_json
from robustprune.paths import CELL_FILE, CELLS_DIR, RESULTS_FILE, SWEEP_PLAN_FILE
from robustprune.results.cells import CellConfig, CellRecord
from robustprune.results.io import check_document, load_document
from robustprune.scoring.result import ScoreResult
from robustprune.validation import escape, path_kind


@dataclass
class StoredCell:
    """One cell's record plus its full score result, loaded on demand."""

    record: CellRecord
    root: Path | None = None  # the sweep directory that `record.result` is relative to
    _result: ScoreResult | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def recipe(self) -> str:
        return self.record.recipe

    @property
    def sparsity(self) -> float:
        return self.record.sparsity

    @property
    def seed(self) -> int:
        return self.record.seed

    @property
    def match_key(self) -> tuple[str, float, int]:
        return self.record.match_key

    @property
    def label(self) -> str:
        return self.record.label

    def has_result_file(self) -> bool:
        """Whether the score document exists (cheap: not read or validated)."""
        if self._result is not None:
            return True
        return self.root is not None and bool(self.record.result) and (self.root / self.record.result).is_file()

    def result(self, *, cache: bool = True, require_per_sample: bool = True) -> ScoreResult:
        """The cell's full score result (with the per-sample table); UsageError when it is missing or damaged.

        `cache=False` reads it without keeping it: a big sweep's per-sample tables need not all sit in memory.
        """
        if self._result is not None:
            return self._result
        if self.root is None or not self.record.result:
            raise UsageError(f"cell {self.label}: no score document is recorded")
        result = ScoreResult.from_json(
            load_document(self.root / self.record.result, require_per_sample=require_per_sample)
        )
        if cache:
            self._result = result
        return result


@dataclass
class StoredSweep:
    root: Path
    spec: SweepSpec | None  # None when the sweep's plan is missing (cells gathered without it)
    cells: list[StoredCell]
    complete: bool  # False when results.json was missing and the cells were gathered from cells/*/cell.json

    def by_key(self) -> dict[str, StoredCell]:
        return {c.key: c for c in self.cells}


def _sort_key(cell: StoredCell) -> tuple[str, float, int, str]:
    return cell.recipe, cell.sparsity, cell.seed, cell.key


def read_cell_record(path: Path) -> CellRecord:
    data = read_json(path, "cell record")
    try:
        return CellRecord.from_json(data)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cell record {escape(path)} is damaged ({exc})") from None


def is_sweep_document(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == "sweep"


def load_sweep(path: str | Path) -> StoredSweep:
    """A sweep from its directory or its results.json; a directory without results.json is read cell by cell."""
    path = Path(path)
    is_file = path_kind(path, "sweep") == "file"
    root = path.parent if is_file else path
    results = path if is_file else path / RESULTS_FILE
    if results.exists():
        doc = load_document(results)
        if not is_sweep_document(doc):
            raise UsageError(
                f"{escape(results)} is a {doc.get('kind', 'unknown')!r} result, not a sweep; "
                "pass a sweep directory (robustprune sweep --out DIR)"
            )
        cells = [StoredCell(CellRecord.from_json(r), root) for r in doc["cells"]]
        return StoredSweep(root, _spec(doc.get("spec")), sorted(cells, key=_sort_key), complete=True)
    if not (root / CELLS_DIR).is_dir():
        raise UsageError(f"{escape(root)} is not a sweep directory: it holds neither {RESULTS_FILE} nor {CELLS_DIR}/")
    sweep_file = root / SWEEP_PLAN_FILE
    plan = read_json(sweep_file, "sweep plan") if sweep_file.exists() else {}
    # Only this sweep's cells: the directory may also hold cells of an earlier configuration run into it.
    planned = set(plan["cells"]) if isinstance(plan.get("cells"), list) else None
    cells = []
    for cell_file in sorted((root / CELLS_DIR).glob(f"*/{CELL_FILE}")):
        if planned is not None and cell_file.parent.name not in planned:
            continue
        try:
            cells.append(StoredCell(read_cell_record(cell_file), root))
        except UsageError:
            continue  # a damaged cell.json means an unfinished cell: the sweep would recompute it, so skip it
    if not cells:
        raise UsageError(f"{escape(root)} holds no finished cell of its sweep yet (no {CELLS_DIR}/*/{CELL_FILE})")
    return StoredSweep(root, _spec(plan.get("spec")), sorted(cells, key=_sort_key), complete=False)


def _spec(data: Any) -> SweepSpec | None:
    if not isinstance(data, dict) or not data:
        return None
    try:
        return sweep_spec_from_dict(data)
    except (UsageError, TypeError):
        return None  # a stored spec this version cannot rebuild: the report falls back on the cells


def score_cell(result: ScoreResult, origin: Path | None = None) -> StoredCell:
    """A single score result as a one-cell 'sweep' (recipe "score"), so `check` treats both alike."""
    record = CellRecord(
        key="score",
        recipe="score",
        sparsity=0.0,
        seed=result.provenance.seed,
        parent_key=None,
        config=CellConfig(data_fingerprint=result.data.fingerprint),
        result=str(origin) if origin else None,
    )
    return StoredCell(record, None, result)


def load_cells(
    source: str | Path | dict[str, Any] | ScoreResult, *, require_per_sample: bool = True
) -> tuple[str, list[StoredCell], str]:
    """("sweep" | "score", cells, description) for a sweep dir / sweep results.json / score results.json (or the
    directory holding one) / an already loaded score result or document."""
    if isinstance(source, ScoreResult):
        return "score", [score_cell(source)], "<result>"
    if isinstance(source, dict):
        if is_sweep_document(source):
            raise UsageError("pass a sweep as its directory or results.json path, not as a loaded document")
        check_document(source, "the document", require_per_sample=require_per_sample)  # as a file would be
        return "score", [score_cell(ScoreResult.from_json(source))], "<document>"
    path = Path(source)
    kind = path_kind(path, "result")
    if kind == "missing":
        raise UsageError(f"{escape(path)} not found; pass a results.json, a score directory or a sweep directory")
    results = path / RESULTS_FILE if kind == "dir" else path
    if kind == "dir" and not results.exists() and (path / CELLS_DIR).is_dir():
        return "sweep", load_sweep(path).cells, str(path)
    doc = load_document(results, require_per_sample=require_per_sample)
    if is_sweep_document(doc):
        return "sweep", load_sweep(results).cells, str(path)
    return "score", [score_cell(ScoreResult.from_json(doc), results)], str(path)
