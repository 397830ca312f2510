"""The grid of a sweep as cells: recipe x target sparsity x seed, parents first, each named by a key that hashes
its resolved configuration.

Keys survive evolution: the hashed payload carries KEY_VERSION, leaves out fields at their defaults (recipe and
pruning tables, attack settings as given) and empty optional ones, and leaves out documentation (descriptions,
paper settings, source paths). Adding an optional field to a spec therefore keeps every existing key, and a change
that does alter what a cell computes alters its key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from robustprune.config import BatterySpec, SweepSpec, canonical_key, long_allowed
from robustprune.errors import UsageError
from robustprune.results.cells import CellConfig
from robustprune.version import __version__

KEY_VERSION = 2  # 1: the full asdict of every spec, defaults included (robustprune 0.1.0 before issue 9)
_DOCUMENTATION = ("description", "paper_settings", "source")


@dataclass(frozen=True)
class Cell:
    recipe: str
    sparsity: float
    seed: int
    key: str
    parent_key: str | None
    config: CellConfig = field(repr=False)
    # The recipe file the plan resolved (builtin:<name> or an absolute path): workers load exactly it, whatever
    # directories they were (not) given; documentation, not part of the key.
    recipe_source: str = field(default="", compare=False)
    # Where the cell runs (SweepSpec.device; executors may pin a CUDA index per worker): not part of the key, so a
    # cell computed on another device is reused and results compare across devices.
    device: str = field(default="auto", compare=False)

    @property
    def label(self) -> str:
        return f"{self.recipe} s={self.sparsity:g} seed={self.seed}"


def without_defaults(spec: Any) -> dict[str, Any]:
    """A spec dataclass as a dict of the fields that differ from their defaults (nested specs alike)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else f.default_factory()
            if f.default_factory is not dataclasses.MISSING
            else dataclasses.MISSING
        )
        if default is not dataclasses.MISSING and value == default:
            continue
        if dataclasses.is_dataclass(value):  # present where the default is absent (a [pruning] table): keep it
            out[f.name] = without_defaults(value)
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _battery_payload(battery: BatterySpec | None) -> dict[str, Any] | None:
    if battery is None:
        return None
    return {
        "name": battery.name,
        "threat": {"norm": battery.threat.norm, "eps": battery.threat.eps},
        "attacks": [
            {"name": a.name, "label": a.label, "norms": sorted(a.norms), "params": dict(a.params)}
            for a in battery.attacks
        ],
    }


def cell_key(recipe: Any, config: CellConfig) -> str:
    """The key of a cell: a hash of what it computes (see the module docstring)."""
    payload = {k: v for k, v in config.to_json().items() if v is not None and k not in ("recipe", "battery")}
    payload |= {
        "key_version": KEY_VERSION,
        "recipe": {k: v for k, v in without_defaults(recipe).items() if k not in _DOCUMENTATION},
        "battery": _battery_payload(config.battery_spec()),
        "head_battery": _battery_payload(config.head_battery_spec()),
    }
    return canonical_key({k: v for k, v in payload.items() if v is not None})


def _recipe_prunes(recipe: Any) -> bool:
    """Plain training with no pruning plan is the dense reference; every other recipe prunes to the target
    (defenses without a [pruning] table default to global magnitude pruning, see pruning_driver.resolve_pruning)."""
    return recipe.pruning is not None or recipe.defense != "standard"


MAX_CELLS = 500  # a sweep beyond this (100,000 seeds, say) is refused unless long runs are allowed


def _stored(spec: BatterySpec) -> dict[str, Any]:
    return {k: v for k, v in spec.to_dict().items() if k != "source"}


def _check_runnable(spec: SweepSpec, recipes: dict[str, Any], test: Any) -> None:
    """What a cell would otherwise find out only after the sweep wrote its plan: the device, the training split and
    its classes, every recipe's model on this data, and a parent recipe the children can start from."""
    from robustprune.data import load_dataset
    from robustprune.defenses.base import DEFENSES
    from robustprune.devices import resolve_device

    resolve_device(spec.device)
    train = load_dataset(spec.dataset, "train")
    if train.num_classes != test.num_classes or tuple(train.input_shape) != tuple(test.input_shape):
        raise UsageError(
            f"dataset {spec.dataset}: the train split has {train.num_classes} classes of shape "
            f"{tuple(train.input_shape)}, the test split {test.num_classes} of shape {tuple(test.input_shape)}; "
            "use splits of one dataset"
        )
    for name, recipe in recipes.items():
        try:
            DEFENSES.get(recipe.defense)(recipe).build_model(test.num_classes, test.input_shape)
        except UsageError as err:
            raise UsageError(f"recipe {name!r} cannot build its model for {spec.dataset}: {err}") from None
    parent = recipes[spec.parent_recipe]
    children = [recipes[name] for name in spec.recipes if recipes[name].needs_parent]
    if children and parent.needs_parent:
        raise UsageError(
            f"parent_recipe {spec.parent_recipe!r} needs a parent itself; name a recipe that trains from scratch "
            "(dense, pgd_at, ...)"
        )
    for child in children:
        if child.architecture != parent.architecture:
            raise UsageError(
                f"recipe {child.name!r} ({child.architecture}) cannot start from parent_recipe "
                f"{spec.parent_recipe!r} ({parent.architecture}); use a parent recipe of the same architecture"
            )


def _check_grid_size(spec: SweepSpec) -> None:
    """Every recipe has at least one cell per seed: a grid already beyond MAX_CELLS by that count is refused before
    anything is loaded or planned (100,000 seeds must not take a minute to refuse)."""
    least = len(set(spec.recipes)) * len(set(spec.seeds))
    if least > MAX_CELLS and not long_allowed():
        raise UsageError(
            f"the sweep plans at least {least:,} cells ({len(spec.recipes)} recipes x {len(spec.seeds)} seeds), beyond "
            f"{MAX_CELLS}; each trains and scores a model: narrow the grid, or pass --allow-long if you mean it"
        )


def plan_cells(spec: SweepSpec) -> list[Cell]:
    """Every cell of the grid, parents first; validates recipes, battery and data before anything runs."""
    from robustprune.attacks import check_battery, load_battery
    from robustprune.config.eps import check_grid_fits, default_eps
    from robustprune.data import load_dataset
    from robustprune.defenses.base import load_recipe

    _check_grid_size(spec)
    battery = load_battery(spec.battery, norm=spec.norm, eps=spec.eps)
    head = (
        load_battery(spec.head_battery, norm=battery.threat.norm, eps=battery.threat.eps) if spec.head_battery else None
    )
    data = load_dataset(spec.dataset, "test").subset(spec.n)
    if spec.eps is None and battery.source.startswith("builtin:"):  # the dataset's usual eps (config.eps)
        eps = default_eps(data.input_shape, battery.threat.norm)
        battery = load_battery(spec.battery, norm=spec.norm, eps=eps)
        head = load_battery(spec.head_battery, norm=battery.threat.norm, eps=eps) if spec.head_battery else None
    for checked in (battery, head):
        if checked is not None:
            check_battery(checked, data.num_classes)
            checked.threat.check_input_dim(int(math.prod(data.input_shape)))
    grid = spec.eps_grid if spec.eps_grid is not None else (battery.eps_curve.grid if battery.eps_curve else None)
    if grid is not None:
        check_grid_fits(list(grid), battery.threat.norm, int(math.prod(data.input_shape)))
    overrides = [f"train.epochs={spec.epochs}"] if spec.epochs is not None else []
    recipes = {name: load_recipe(name, overrides) for name in dict.fromkeys((*spec.recipes, spec.parent_recipe))}

    def make(name: str, sparsity: float, seed: int, parent: Cell | None) -> Cell:
        recipe = recipes[name]
        config = CellConfig(
            dataset=spec.dataset,
            data_fingerprint=data.fingerprint(),
            n=len(data),
            battery=_stored(battery),
            head_battery=_stored(head) if head is not None else None,
            batch_size=spec.batch_size,
            threads=spec.threads,
            robustprune=__version__,
            recipe={k: v for k, v in recipe.to_dict().items() if k != "source"},
            recipe_name=name,
            sparsity=sparsity,
            seed=seed,
            epochs=spec.epochs,
            parent=parent.key if parent else None,
            eps_grid=list(spec.eps_grid) if spec.eps_grid is not None else None,
            certify=spec.certify,
        )
        key = cell_key(recipe, config)
        return Cell(name, sparsity, seed, key, parent.key if parent else None, config, recipe.source, spec.device)

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
    planned = list({c.key: c for c in [*parents.values(), *cells]}.values())
    if len(planned) > MAX_CELLS and not long_allowed():
        raise UsageError(
            f"the sweep plans {len(planned):,} cells ({len(spec.recipes)} recipes x {len(spec.sparsities)} sparsities x "
            f"{len(spec.seeds)} seeds, with parents), beyond {MAX_CELLS}; each trains and scores a model: narrow the "
            "grid, or pass --allow-long if you mean it"
        )
    _check_runnable(spec, recipes, data)
    return planned
