"""Sweeps: recipes x target sparsities x seeds. Each cell trains (or prunes) a model and scores it on the same
fixed examples; its files live under a key derived from its full resolved configuration.

Resumable by construction: every file is written atomically and a cell's `cell.json` is written last, so a cell
with a readable cell.json is complete and one without is recomputed from scratch. Parents (the dense model a
pruning recipe starts from) are cells too, run in a first stage.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from robustprune.atomic import write_json
from robustprune.config import canonical_key, read_toml
from robustprune.errors import UsageError
from robustprune.locking import CELL_LOCK, SWEEP_LOCK, hold
from robustprune.validation import check_float, check_int, check_seed, escape, output_dir
from robustprune.version import __version__

log = logging.getLogger("robustprune.sweep")

EXECUTORS = ("inprocess", "process", "ray")
CELL_FILE = "cell.json"


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    recipes: tuple[str, ...]
    sparsities: tuple[float, ...] = (0.0,)
    seeds: tuple[int, ...] = (0,)
    dataset: str = "digits"
    battery: str = "standard"
    head_battery: str | None = None  # multi-head (DIO) models: battery for the per-head report (default: battery)
    norm: str | None = None
    eps: float | None = None
    n: int | None = None
    epochs: int | None = None  # overrides every recipe's train.epochs when set
    batch_size: int = 256
    threads: int = 1  # per worker; fixed so that every executor computes the same numbers
    parent_recipe: str = "dense"

    def __post_init__(self) -> None:
        """Types, finiteness and bounds of every field, the same from flags, a TOML file or Python."""
        for key in ("recipes", "sparsities", "seeds"):
            value = getattr(self, key)
            if not isinstance(value, list | tuple):
                raise UsageError(f"the sweep's {key} must be a list, got {escape(repr(value))}")
            object.__setattr__(self, key, tuple(value))
        if not self.recipes or not all(isinstance(r, str) and r for r in self.recipes):
            raise UsageError(f'the sweep needs recipes as names, e.g. ["dense", "magnitude"]; got {self.recipes!r}')
        if not self.seeds:
            raise UsageError("the sweep lists no seeds: pass --seeds 0,1")
        if not self.sparsities:
            raise UsageError("the sweep lists no sparsities: pass --sparsities 0,0.5,0.9")
        for seed in self.seeds:
            check_seed(seed, "sweep seed")
        for sparsity in self.sparsities:
            if not 0 <= check_float(sparsity, "sweep sparsity") < 1:
                raise UsageError(f"sparsity {sparsity} is impossible: use values in [0, 1)")
        for key in ("dataset", "battery", "parent_recipe"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise UsageError(f"the sweep's {key} must be a name or path, got {escape(repr(getattr(self, key)))}")
        for key in ("head_battery", "norm"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise UsageError(f"the sweep's {key} must be a string, got {escape(repr(getattr(self, key)))}")
        if self.eps is not None:
            check_float(self.eps, "the sweep's eps")
        if self.n is not None:
            check_int(self.n, "the sweep's n", lo=1)
        if self.epochs is not None:
            check_int(self.epochs, "the sweep's epochs", bound="epochs")
        check_int(self.batch_size, "the sweep's batch_size", bound="batch_size")
        check_int(self.threads, "the sweep's threads", bound="threads")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_sweep_toml(path: str | Path) -> dict[str, Any]:
    data = read_toml(Path(path), "sweep file")
    allowed = set(SweepSpec.__dataclass_fields__)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(allowed))}")
    for key in ("recipes", "sparsities", "seeds"):
        if key in data and not isinstance(data[key], list):
            raise UsageError(f"{escape(path)}: {key} must be a list, e.g. {key} = [...]")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


@dataclass(frozen=True)
class Cell:
    recipe: str
    sparsity: float
    seed: int
    key: str
    parent_key: str | None
    config: dict[str, Any] = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.recipe} s={self.sparsity:g} seed={self.seed}"


def _recipe_prunes(recipe: Any) -> bool:
    """Plain training with no pruning plan is the dense reference; every other recipe prunes to the target
    (defenses without a [pruning] table default to global magnitude pruning, see pruning_driver.resolve_pruning)."""
    return recipe.pruning is not None or recipe.defense != "standard"


def plan_cells(spec: SweepSpec) -> list[Cell]:
    """Every cell of the grid, parents first; validates recipes, battery and data before anything runs."""
    from robustprune.attacks import check_battery, load_battery
    from robustprune.data import load_dataset
    from robustprune.defenses.base import load_recipe

    battery = load_battery(spec.battery, norm=spec.norm, eps=spec.eps)
    head = (
        load_battery(spec.head_battery, norm=battery.threat.norm, eps=battery.threat.eps) if spec.head_battery else None
    )
    data = load_dataset(spec.dataset, "test").subset(spec.n)
    for checked in (battery, head):
        if checked is not None:
            check_battery(checked, data.num_classes)
    overrides = [f"train.epochs={spec.epochs}"] if spec.epochs is not None else []
    recipes = {name: load_recipe(name, overrides) for name in dict.fromkeys((*spec.recipes, spec.parent_recipe))}
    common = {
        "dataset": spec.dataset,
        "data_fingerprint": data.fingerprint(),
        "n": len(data),
        "battery": {k: v for k, v in battery.to_dict().items() if k != "source"},
        "head_battery": head and {k: v for k, v in head.to_dict().items() if k != "source"},
        "batch_size": spec.batch_size,
        "threads": spec.threads,
        "robustprune": __version__,
    }

    def make(name: str, sparsity: float, seed: int, parent: Cell | None) -> Cell:
        recipe = {k: v for k, v in recipes[name].to_dict().items() if k != "source"}
        config = common | {
            "recipe": recipe,
            "recipe_name": name,
            "sparsity": sparsity,
            "seed": seed,
            "epochs": spec.epochs,
            "parent": parent.key if parent else None,
        }
        return Cell(name, sparsity, seed, canonical_key(config), parent.key if parent else None, config)

    parents: dict[int, Cell] = {}
    cells: list[Cell] = []
    for name in spec.recipes:
        for seed in spec.seeds:
            for sparsity in spec.sparsities:
                if sparsity > 0 and not _recipe_prunes(recipes[name]):
                    continue  # a recipe with no pruning plan only has a dense cell
                parent = None
                if recipes[name].needs_parent:
                    if seed not in parents:
                        parents[seed] = make(spec.parent_recipe, 0.0, seed, None)
                    parent = parents[seed]
                cells.append(make(name, sparsity, seed, parent))
    if not cells:
        raise UsageError("the sweep has no cells: a recipe without pruning only runs at sparsity 0")
    return list({c.key: c for c in [*parents.values(), *cells]}.values())


def load_complete_cell(cell_dir: Path, key: str) -> dict[str, Any] | None:
    """The stored summary of a finished cell, or None when the cell must be (re)computed."""
    path = cell_dir / CELL_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("key") != key:
            raise ValueError("key mismatch")
        json.loads((cell_dir / "score" / "results.json").read_text())
        return record
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        log.warning("cell %s: stored result is damaged (%s); recomputing it", key, exc)
        return None


def run_cell(cell: Cell, root: str) -> dict[str, Any]:
    """Train (or reuse) and score one cell; safe to call in any worker process."""
    import torch

    torch.set_num_threads(int(cell.config["threads"]))
    cell_dir = Path(root) / "cells" / cell.key
    done = load_complete_cell(cell_dir, cell.key)
    if done is not None:
        return done
    cell_dir.mkdir(parents=True, exist_ok=True)
    # Two workers handed the same cell (a cluster, or two sweeps sharing a directory) compute it once: the second
    # waits here and then finds it complete.
    with hold(cell_dir / CELL_LOCK, what="cell", announce=None):
        done = load_complete_cell(cell_dir, cell.key)
        if done is not None:
            return done
        return _compute_cell(cell, cell_dir, root)


def _compute_cell(cell: Cell, cell_dir: Path, root: str) -> dict[str, Any]:
    import time

    from robustprune.config import BatterySpec
    from robustprune.data import load_dataset
    from robustprune.defenses.base import DEFENSES, load_recipe
    from robustprune.defenses.pipeline import train_model
    from robustprune.models import load_checkpoint, save_checkpoint
    from robustprune.scoring import score

    for stale in cell_dir.glob("**/.*.tmp"):  # temporaries of a killed run: never trusted, never reused
        stale.unlink()
    overrides = [f"train.epochs={cell.config['epochs']}"] if cell.config["epochs"] is not None else []
    recipe = load_recipe(cell.recipe, overrides)
    data = load_dataset(cell.config["dataset"], "test").subset(cell.config["n"])

    # The architecture comes from the recipe (as the sweep resolved it), never from a file in the cell: a data file
    # must not be able to make robustprune import code.
    def build() -> Any:
        return DEFENSES.get(recipe.defense)(recipe).build_model(data.num_classes, data.input_shape)

    ckpt = cell_dir / "model.safetensors"
    loaded = _load_partial_cell(cell, ckpt, build) if ckpt.exists() else None
    if loaded is None:
        parent = str(Path(root) / "cells" / cell.parent_key / "model.safetensors") if cell.parent_key else None
        started = time.perf_counter()
        artifact, manifest = train_model(
            recipe,
            dataset=cell.config["dataset"],
            sparsity=cell.sparsity,
            parent=parent,
            seed=cell.seed,
        )
        manifest = manifest | {"train_seconds": time.perf_counter() - started, "cell_key": cell.key}
        save_checkpoint(artifact.model, ckpt, manifest=manifest)
        loaded = load_checkpoint(build(), ckpt)
    model, info = loaded
    manifest = info.manifest or {}
    result = score(
        model,
        data,
        BatterySpec.from_dict(cell.config["battery"]),
        batch_size=cell.config["batch_size"],
        seed=cell.seed,
        architecture=recipe.architecture,
        checkpoint=info.to_dict(),
        head_battery=BatterySpec.from_dict(cell.config["head_battery"]) if cell.config.get("head_battery") else None,
    )
    result.save(str(cell_dir / "score"), html=False)
    record = summarize(cell, result.document, manifest)
    write_json(cell_dir / CELL_FILE, record)
    return record


def _load_partial_cell(cell: Cell, ckpt: Path, build: Callable[[], Any]) -> tuple[Any, Any] | None:
    """The checkpoint of a cell that stopped while scoring, if it is intact and this cell's; else None (and the
    partial files are removed, so the cell is retrained instead of being a dead end).

    load_checkpoint checks the manifest against the SHA-256 the safetensors metadata holds before any field of it
    is used; a cell's checkpoint must carry a manifest naming this cell."""
    from robustprune.models import load_checkpoint
    from robustprune.models.checkpoint import manifest_path

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


def summarize(cell: Cell, doc: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The per-cell record the sweep report and `check` read (the full result stays in score/results.json)."""
    calibration = doc["calibration"]
    return {
        "key": cell.key,
        "recipe": cell.recipe,
        "sparsity": cell.sparsity,
        "seed": cell.seed,
        "parent_key": cell.parent_key,
        "config": cell.config,
        "architecture": manifest["architecture"],
        "achieved_sparsity": (doc["sparsity"] or {}).get("sparsity"),
        "clean_acc": doc["clean_acc"],
        "robust_acc": doc["robust_acc"],
        "attacks": {a["label"]: a["robust_acc"] for a in doc["attacks"]},
        "ece_clean": calibration["clean"]["ece"]["value"],
        "ece_adv": calibration["adversarial"]["ece"]["value"],
        "nll_clean": calibration["clean"]["nll"]["value"],
        "nll_adv": calibration["adversarial"]["nll"]["value"],
        "randomized": doc["randomized"],
        "train_seconds": manifest.get("train_seconds"),
        "score_seconds": doc["cost"]["seconds"],
        "n_forward": doc["cost"]["n_forward"],
        "n_backward": doc["cost"]["n_backward"],
        "worst_head_robust_acc": (doc.get("multi_head") or {}).get("worst_head_robust_acc"),
        "result": f"cells/{cell.key}/score/results.json",
    }


def _stage(
    cells: Sequence[Cell],
    root: str,
    executor: str,
    workers: int,
    address: str | None,
    on_done: Callable[[dict[str, Any]], None],
) -> None:
    if not cells:
        return
    if executor == "inprocess":
        for cell in cells:
            on_done(run_cell(cell, root))
    elif executor == "process":
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for record in pool.map(run_cell, cells, [root] * len(cells)):
                on_done(record)
    else:
        import ray

        if not ray.is_initialized():
            ray.init(
                address=address, num_cpus=None if address else workers, include_dashboard=False, log_to_driver=False
            )
        remote = ray.remote(num_cpus=1)(run_cell)
        for record in ray.get([remote.remote(cell, root) for cell in cells]):
            on_done(record)


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    executor: str = "inprocess",
    workers: int = 2,
    address: str | None = None,
    progress: bool = False,
    wait: bool = True,
) -> list[dict[str, Any]]:
    """Run every cell not already complete under `out` (parents first) and write the sweep's results.json.

    Everything is validated (plan_cells) before `out` is created; the directory is then locked for the sweep's
    lifetime: a second sweep into it waits (`wait`) or is refused naming the holder.
    """
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'robustprune[ray]'") from None
    cells = plan_cells(spec)
    with output_dir(out) as root, hold(root / SWEEP_LOCK, what="sweep directory", wait=wait):
        return _run_planned(spec, cells, root, executor, workers, address, progress)


def _run_planned(
    spec: SweepSpec,
    cells: list[Cell],
    root: Path,
    executor: str,
    workers: int,
    address: str | None,
    progress: bool,
) -> list[dict[str, Any]]:
    keys = [c.key for c in cells]
    write_json(root / "sweep.json", {"spec": spec.to_dict(), "cells": keys})
    _drop_stale_results(root / "results.json", set(keys))
    parent_keys = {c.parent_key for c in cells if c.parent_key}
    from tqdm import tqdm

    bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=not progress or None)
    records: dict[str, dict[str, Any]] = {}

    def done(record: dict[str, Any]) -> None:
        records[record["key"]] = record
        bar.update(1)

    _stage([c for c in cells if c.key in parent_keys], str(root), executor, workers, address, done)
    _stage([c for c in cells if c.key not in parent_keys], str(root), executor, workers, address, done)
    bar.close()
    ordered = [records[c.key] for c in cells]
    write_json(root / "results.json", sweep_document(spec, ordered))
    return ordered


def _drop_stale_results(path: Path, keys: set[str]) -> None:
    """A results.json left by a different sweep in the same directory would be read as this one's until it ends."""
    try:
        old = {str(r.get("key")) for r in json.loads(path.read_text()).get("cells") or []}
    except FileNotFoundError:
        return
    except (OSError, ValueError, AttributeError):
        old = set()  # unreadable: not this sweep's either
    if old != keys:
        path.unlink()


def sweep_document(spec: SweepSpec, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "kind": "sweep",
        "spec": spec.to_dict(),
        "cells": sorted(records, key=lambda r: (r["recipe"], r["sparsity"], r["seed"])),
    }
