"""Running a sweep: plan and validate every cell, lock the directory, run the parents then the other cells on an
executor, and write the sweep's results.json.

Resumable by construction: every file is written atomically and a cell's `cell.json` is written last, so a cell
with a readable cell.json is complete and one without is recomputed from scratch.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robustprune.atomic import write_json
from robustprune.config import SweepSpec
from robustprune.errors import UsageError, WriteError
from robustprune.jsonio import read_json
from robustprune.paths import CELL_FILE, RESULTS_FILE, SWEEP_LOCK, SWEEP_PLAN_FILE, cell_dir
from robustprune.progress import progress_bar
from robustprune.results.cells import CellRecord
from robustprune.sweep.executors import EXECUTORS
from robustprune.sweep.locking import hold
from robustprune.sweep.plan import Cell, plan_cells
from robustprune.validation import check_output_path, escape, output_dir, stat_path


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    executor: str = "inprocess",
    workers: int = 2,
    address: str | None = None,
    progress: bool = False,
    wait: bool = True,
    overwrite: bool = False,
) -> list[CellRecord]:
    """Run every cell not already complete under `out` (parents first) and write the sweep's results.json.

    Everything is validated (plan_cells: batteries, data, device, recipes and their models) before `out` is created;
    the directory is then locked for the sweep's lifetime: a second sweep into it waits (`wait`) or is refused naming
    the holder. A folder that holds a different sweep, or anything else, is refused unless `overwrite` (then its plan
    and report are replaced; cells both sweeps share are reused).
    """
    runner = EXECUTORS.get(executor)
    runner.check()
    check_output_path(out)
    cells = plan_cells(spec)
    keys = [c.key for c in cells]
    _check_sweep_folder(Path(out), keys, overwrite)  # before anything is written (the lock file included)
    with _disk_errors(out), output_dir(out) as root, hold(root / SWEEP_LOCK, what="sweep directory", wait=wait):
        # again under the lock: another sweep may have finished writing its plan while this one waited
        _check_sweep_folder(root, keys, overwrite)
        if progress:
            print(plan_line(root, cells, workers), file=sys.stderr)
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


@contextlib.contextmanager
def _disk_errors(out: str | Path) -> Iterator[None]:
    """A full disk (or a read-only one) during a sweep is one line: what is complete stays, the sweep resumes."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise
        raise WriteError(
            f"cannot write {escape(exc.filename or out)}: {exc.strerror}; the cells completed so far are kept in "
            f"{escape(out)}, and the same sweep resumes from them"
        ) from None


def plan_line(root: Path, cells: list[Cell], workers: int) -> str:
    """What the sweep will do: the cells planned, those already complete, and the time the rest should take (from
    the complete ones' own timings, when there are any)."""
    done = []
    for cell in cells:
        record = cell_dir(root, cell.key) / CELL_FILE
        if record.is_file():
            try:
                done.append(CellRecord.from_json(read_json(record, "cell record")))
            except (UsageError, KeyError, TypeError, ValueError):
                continue
    todo = len(cells) - len(done)
    line = f"sweep: {len(cells)} cells planned, {len(done)} already complete, {todo} to run"
    timed = [(r.train_seconds or 0.0) + (r.score_seconds or 0.0) for r in done if r.score_seconds is not None]
    if todo and timed:
        minutes = sum(timed) / len(timed) * todo / max(1, workers) / 60
        line += f" (about {minutes:.0f} min at the complete cells' pace, {workers} workers)"
    return line


def _check_sweep_folder(out: Path, keys: list[str], overwrite: bool) -> None:
    """The same sweep may resume in its folder; a different one (or a folder of other files) needs `overwrite`."""
    if overwrite or stat_path(out, "--out") is None or not out.is_dir():
        return
    plan = out / SWEEP_PLAN_FILE
    if plan.is_file():
        try:
            old = read_json(plan, "sweep plan").get("cells") or []
        except (UsageError, AttributeError):
            old = None
        if isinstance(old, list) and set(map(str, old)) == set(keys):
            return  # this sweep, resuming
        shared = len(set(map(str, old or [])) & set(keys))
        raise UsageError(
            f"--out {escape(out)} holds a different sweep ({len(old or [])} cells, {shared} in common with this one's "
            f"{len(keys)}); pass --overwrite to replace its plan and report (shared cells are reused), or choose "
            "another --out"
        )
    # the lock, and the temporaries of an atomic write (a hidden name ending in .tmp), are the sweep's own
    others = [p.name for p in out.iterdir() if p.name != SWEEP_LOCK and not _temporary(p.name)]
    if others:
        raise UsageError(
            f"--out {escape(out)} holds files that are not a sweep's ({', '.join(sorted(others)[:3])}); pass --overwrite "
            "to write the sweep beside them, or choose another --out"
        )


def _temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


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
