"""Running a sweep: plan and validate every cell, lock the directory, run the parents then the other cells on an
executor, and write the sweep's results.json.

Resumable by construction: every file is written atomically and a cell's `cell.json` is written last, so a cell
with a readable cell.json is complete and one without is recomputed from scratch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustprune.atomic import write_json
from robustprune.config import SweepSpec
from robustprune.errors import UsageError
from robustprune.jsonio import read_json
from robustprune.paths import RESULTS_FILE, SWEEP_LOCK, SWEEP_PLAN_FILE
from robustprune.progress import progress_bar
from robustprune.results.cells import CellRecord
from robustprune.sweep.executors import EXECUTORS
from robustprune.sweep.locking import hold
from robustprune.sweep.plan import Cell, plan_cells
from robustprune.validation import output_dir


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    executor: str = "inprocess",
    workers: int = 2,
    address: str | None = None,
    progress: bool = False,
    wait: bool = True,
) -> list[CellRecord]:
    """Run every cell not already complete under `out` (parents first) and write the sweep's results.json.

    Everything is validated (plan_cells) before `out` is created; the directory is then locked for the sweep's
    lifetime: a second sweep into it waits (`wait`) or is refused naming the holder.
    """
    runner = EXECUTORS.get(executor)
    runner.check()
    cells = plan_cells(spec)
    with output_dir(out) as root, hold(root / SWEEP_LOCK, what="sweep directory", wait=wait):
        keys = [c.key for c in cells]
        write_json(root / SWEEP_PLAN_FILE, {"spec": spec.to_dict(), "cells": keys})
        _drop_stale_results(root / RESULTS_FILE, set(keys))
        parent_keys = {c.parent_key for c in cells if c.parent_key}

        bar = progress_bar(len(cells), "cells", "cell", progress, leave=True)
        records: dict[str, CellRecord] = {}

        def done(record: CellRecord) -> None:
            records[record.key] = record
            bar.update(1)

        for stage in ([c for c in cells if c.key in parent_keys], [c for c in cells if c.key not in parent_keys]):
            if stage:
                # absolute: a worker on another node (Ray) or in another directory must find the same folder
                runner.run(stage, str(root.resolve()), workers=workers, address=address, on_done=done)
        bar.close()
        ordered = [records[c.key] for c in cells]
        write_json(root / RESULTS_FILE, sweep_document(spec, ordered))
        return ordered


def _drop_stale_results(path: Path, keys: set[str]) -> None:
    """A results.json left by a different sweep in the same directory would be read as this one's until it ends."""
    if not path.exists():
        return
    try:
        old = {str(r.get("key")) for r in read_json(path, "sweep result").get("cells") or []}
    except (UsageError, AttributeError):
        old = set()  # unreadable: not this sweep's either
    if old != keys:
        path.unlink()


def sweep_document(spec: SweepSpec, records: list[CellRecord]) -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "kind": "sweep",
        "spec": spec.to_dict(),
        "cells": [r.to_json() for r in sorted(records, key=lambda r: (r.recipe, r.sparsity, r.seed))],
    }


__all__ = ["Cell", "run_sweep", "sweep_document"]
