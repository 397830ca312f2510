"""Reading stored results back: a sweep directory (or its results.json) and single score documents, as cells.

Only reads files; never recomputes a model or an attack. Light on purpose (no torch, no matplotlib) because `check`
and the pytest plugin use it too. A sweep whose results.json is missing (it was stopped before the end) is read
from its finished cells' `cell.json` files, so a partial sweep can still be reported and compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustprune.errors import UsageError
from robustprune.results import RESULTS_FILE, load_document
from robustprune.schema import validate_document
from robustprune.validation import escape, path_kind

CELL_FILE = "cell.json"  # same name as robustprune.sweep.CELL_FILE; not imported to keep this module light


@dataclass
class StoredCell:
    """One cell's record (see `robustprune.sweep.summarize`) plus its full score document, loaded on demand."""

    record: dict[str, Any]
    root: Path | None = None  # the sweep directory that `record["result"]` is relative to
    _document: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return str(self.record.get("key"))

    @property
    def recipe(self) -> str:
        return str(self.record.get("recipe"))

    @property
    def sparsity(self) -> float:
        return float(self.record.get("sparsity") or 0.0)

    @property
    def seed(self) -> int:
        return int(self.record.get("seed") or 0)

    @property
    def match_key(self) -> tuple[str, float, int]:
        """How `check` pairs cells of two sweeps: keys hash the full config, which a regression run changes."""
        return self.recipe, self.sparsity, self.seed

    @property
    def label(self) -> str:
        return f"{self.recipe} s={self.sparsity:g} seed={self.seed}"

    @property
    def config(self) -> dict[str, Any]:
        return self.record.get("config") or {}

    def has_document_file(self) -> bool:
        """Whether the score document exists (cheap: not read or validated)."""
        if self._document is not None:
            return True
        return (
            self.root is not None
            and bool(self.record.get("result"))
            and (self.root / str(self.record["result"])).is_file()
        )

    def document(self, *, cache: bool = True, require_per_sample: bool = True) -> dict[str, Any]:
        """The cell's full score document (with the per-sample table); UsageError when it is missing or damaged.

        `cache=False` reads it without keeping it: a big sweep's per-sample tables need not all sit in memory.
        """
        if self._document is not None:
            return self._document
        if self.root is None or not self.record.get("result"):
            raise UsageError(f"cell {self.label}: no score document is recorded")
        doc = load_document(self.root / str(self.record["result"]), require_per_sample=require_per_sample)
        if cache:
            self._document = doc
        return doc


@dataclass
class StoredSweep:
    root: Path
    spec: dict[str, Any]
    cells: list[StoredCell]
    complete: bool  # False when results.json was missing and the cells were gathered from cells/*/cell.json

    def by_key(self) -> dict[str, StoredCell]:
        return {c.key: c for c in self.cells}


def _sort_key(cell: StoredCell) -> tuple[str, float, int, str]:
    return cell.recipe, cell.sparsity, cell.seed, cell.key


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} not found") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is truncated or not JSON ({exc.msg} at line {exc.lineno})") from None


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
                f"{results} is a {doc.get('kind', 'unknown')!r} result, not a sweep; "
                "pass a sweep directory (robustprune sweep --out DIR)"
            )
        cells = [StoredCell(dict(r), root) for r in doc.get("cells") or []]
        return StoredSweep(root, doc.get("spec") or {}, sorted(cells, key=_sort_key), complete=True)
    if not (root / "cells").is_dir():
        raise UsageError(f"{root} is not a sweep directory: it holds neither {RESULTS_FILE} nor cells/")
    sweep_file = root / "sweep.json"
    plan = _read_json(sweep_file) if sweep_file.exists() else {}
    # Only this sweep's cells: the directory may also hold cells of an earlier configuration run into it.
    planned = set(plan["cells"]) if isinstance(plan.get("cells"), list) else None
    cells = []
    for cell_file in sorted((root / "cells").glob(f"*/{CELL_FILE}")):
        if planned is not None and cell_file.parent.name not in planned:
            continue
        try:
            cells.append(StoredCell(_read_json(cell_file), root))
        except UsageError:
            continue  # a damaged cell.json means an unfinished cell: the sweep would recompute it, so skip it
    if not cells:
        raise UsageError(f"{root} holds no finished cell of its sweep yet (no cells/*/{CELL_FILE})")
    return StoredSweep(root, plan.get("spec") or {}, sorted(cells, key=_sort_key), complete=False)


def score_cell(doc: dict[str, Any], origin: Path | None = None) -> StoredCell:
    """A single score document as a one-cell 'sweep' (recipe "score"), so `check` treats both alike."""
    seed = (doc.get("provenance") or {}).get("seed")
    record = {
        "key": "score",
        "recipe": "score",
        "sparsity": 0.0,
        "seed": seed if isinstance(seed, int) else 0,
        "parent_key": None,
        "config": {"data_fingerprint": (doc.get("data") or {}).get("fingerprint")},
        "result": str(origin) if origin else None,
    }
    return StoredCell(record, None, doc)


def load_cells(
    source: str | Path | dict[str, Any], *, require_per_sample: bool = True
) -> tuple[str, list[StoredCell], str]:
    """("sweep" | "score", cells, description) for a sweep dir / sweep results.json / score results.json (or the
    directory holding one) / an already loaded document."""
    if isinstance(source, dict):
        if is_sweep_document(source):
            raise UsageError("pass a sweep as its directory or results.json path, not as a loaded document")
        try:  # a loaded document gets the checks a file gets
            validate_document(source, require_per_sample=require_per_sample)
        except ValueError as exc:
            raise UsageError(f"the document is not a valid robustprune result: {exc}") from None
        return "score", [score_cell(source)], "<document>"
    path = Path(source)
    kind = path_kind(path, "result")
    if kind == "missing":
        raise UsageError(f"{escape(path)} not found; pass a results.json, a score directory or a sweep directory")
    results = path / RESULTS_FILE if kind == "dir" else path
    if kind == "dir" and not results.exists() and (path / "cells").is_dir():
        return "sweep", load_sweep(path).cells, str(path)
    doc = load_document(results, require_per_sample=require_per_sample)
    if is_sweep_document(doc):
        return "sweep", load_sweep(results).cells, str(path)
    return "score", [score_cell(doc, results)], str(path)
