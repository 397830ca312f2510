"""One cell of a sweep, computed where an executor runs it: train (or reuse the stopped cell's checkpoint), score,
write the score directory and, last, cell.json. Safe in any worker process; a cell is locked while it computes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robustprune.atomic import write_json
from robustprune.errors import UsageError
from robustprune.paths import (
    CELL_FILE,
    CELL_LOCK,
    RESULTS_FILE,
    cell_checkpoint,
    cell_dir,
    cell_result_relpath,
    cell_score_dir,
    manifest_path,
)
from robustprune.results.cells import CellRecord
from robustprune.results.io import load_document, save_result
from robustprune.results.store import read_cell_record
from robustprune.sweep.locking import hold
from robustprune.sweep.plan import Cell

log = logging.getLogger("robustprune.sweep")

_WORKER_CUDA: int | None = None  # the CUDA index this worker process was pinned to (ProcessPool), if any


def pin_worker(index_queue: Any) -> None:
    """ProcessPool initializer: worker i takes CUDA device i % device_count for cells whose device is plain
    `cuda` or `auto` (an explicit cuda:N is kept)."""
    import torch

    global _WORKER_CUDA
    worker = index_queue.get()
    count = torch.cuda.device_count()
    _WORKER_CUDA = worker % count if count else None


def cell_device(spec: str | None) -> Any:
    """The torch.device a cell runs on: its device name resolved here, with this worker's CUDA index when pinned."""
    import torch

    from robustprune.devices import resolve_device

    device = resolve_device(spec or "auto")
    if device.type == "cuda" and _WORKER_CUDA is not None and (spec or "auto").strip().lower() in ("cuda", "auto"):
        device = resolve_device(torch.device("cuda", _WORKER_CUDA))
    return device


def load_complete_cell(root: str | Path, key: str) -> CellRecord | None:
    """The record of a finished cell, or None when the cell must be (re)computed (missing, damaged, another key's)."""
    path = cell_dir(root, key) / CELL_FILE
    if not path.exists():
        return None
    try:
        record = read_cell_record(path)
        if record.key != key:
            raise UsageError("its record names another cell")
        load_document(cell_score_dir(root, key) / RESULTS_FILE)
        return record
    except UsageError as exc:
        log.warning("cell %s: stored result is damaged (%s); recomputing it", key, exc)
        return None


def run_cell(cell: Cell, root: str) -> CellRecord:
    """Train (or reuse) and score one cell; safe to call in any worker process."""
    import torch

    torch.set_num_threads(int(cell.config.threads or 1))
    done = load_complete_cell(root, cell.key)
    if done is not None:
        return done
    directory = cell_dir(root, cell.key)
    directory.mkdir(parents=True, exist_ok=True)
    # Two workers handed the same cell (a cluster, or two sweeps sharing a directory) compute it once: the second
    # waits here and then finds it complete.
    with hold(directory / CELL_LOCK, what="cell", announce=None):
        done = load_complete_cell(root, cell.key)
        if done is not None:
            return done
        return _compute_cell(cell, Path(root))


def _compute_cell(cell: Cell, root: Path) -> CellRecord:
    from robustprune.data import load_dataset
    from robustprune.defenses.base import DEFENSES, load_recipe
    from robustprune.defenses.pipeline import train_model
    from robustprune.models import load_checkpoint, save_checkpoint
    from robustprune.scoring import score

    directory = cell_dir(root, cell.key)
    for stale in directory.glob("**/.*.tmp"):  # temporaries of a killed run: never trusted, never reused
        stale.unlink()
    config = cell.config
    device = cell_device(cell.device)
    overrides = [f"train.epochs={config.epochs}"] if config.epochs is not None else []
    recipe = load_recipe(cell.recipe_source or cell.recipe, overrides)
    data = load_dataset(str(config.dataset), "test")  # scored as its first n (S19 reads the whole split's accuracy)

    # The architecture comes from the recipe (as the sweep resolved it), never from a file in the cell: a data file
    # must not be able to make robustprune import code.
    def build() -> Any:
        return DEFENSES.get(recipe.defense)(recipe).build_model(data.num_classes, data.input_shape)

    ckpt = cell_checkpoint(root, cell.key)
    loaded = _load_partial_cell(cell, ckpt, build) if ckpt.exists() else None
    if loaded is None:
        parent = str(cell_checkpoint(root, cell.parent_key)) if cell.parent_key else None
        started = time.perf_counter()
        artifact, manifest = train_model(
            recipe, dataset=str(config.dataset), sparsity=cell.sparsity, parent=parent, seed=cell.seed, device=device
        )
        manifest = manifest | {"train_seconds": time.perf_counter() - started, "cell_key": cell.key}
        save_checkpoint(artifact.model, ckpt, manifest=manifest)
        loaded = load_checkpoint(build(), ckpt)
    model, info = loaded
    manifest = info.manifest or {}
    result = score(
        model,
        data,
        config.battery_spec(),
        n=config.n,
        batch_size=int(config.batch_size or 256),
        seed=cell.seed,
        architecture=recipe.architecture,
        checkpoint=info.to_dict(),
        head_battery=config.head_battery_spec(),
        parent=_parent_model(root, cell, build),
        device=device,
        eps_grid=config.eps_grid,
        certify=config.certify,
    )
    save_result(result, cell_score_dir(root, cell.key), html=False, overwrite=True)  # the sweep owns its cells
    record = CellRecord.summarize(
        key=cell.key,
        recipe=cell.recipe,
        sparsity=cell.sparsity,
        seed=cell.seed,
        parent_key=cell.parent_key,
        config=config,
        result=result,
        architecture=manifest.get("architecture"),
        train_seconds=manifest.get("train_seconds"),
        result_path=cell_result_relpath(cell.key),
        reconstruction=bool(manifest.get("reconstruction")) or DEFENSES.get(recipe.defense).reconstruction,
        manifest=manifest,
    )
    write_json(directory / CELL_FILE, record.to_json())
    return record


def _parent_model(root: Path, cell: Cell, build: Callable[[], Any]) -> Any:
    """The cell's parent (the model it was pruned from), for the transfer check; None when it has none. The
    parent was trained into this architecture (train refuses a parent that does not fit), so `build` holds it."""
    from robustprune.models import load_checkpoint

    if not cell.parent_key:
        return None
    parent, _ = load_checkpoint(build(), cell_checkpoint(root, cell.parent_key))
    return parent


def _load_partial_cell(cell: Cell, ckpt: Path, build: Callable[[], Any]) -> tuple[Any, Any] | None:
    """The checkpoint of a cell that stopped while scoring, if it is intact and this cell's; else None (and the
    partial files are removed, so the cell is retrained instead of being a dead end).

    load_checkpoint checks the manifest against the SHA-256 the safetensors metadata holds before any field of it
    is used; a cell's checkpoint must carry a manifest naming this cell."""
    from robustprune.models import load_checkpoint

    try:
        model, info = load_checkpoint(build(), ckpt)
        if not info.manifest or info.manifest.get("cell_key") != cell.key:
            raise UsageError("its manifest is missing or names another cell")
        return model, info
    except UsageError as exc:
        log.warning("cell %s: the partial checkpoint is unusable (%s); training the cell again", cell.key, exc)
        ckpt.unlink(missing_ok=True)
        manifest_path(ckpt).unlink(missing_ok=True)
        return None
