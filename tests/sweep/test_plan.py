"""Cell keys survive evolution: they hash what a cell computes, not the specs' defaults or documentation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from robustprune.config import SweepSpec, read_sweep_toml
from robustprune.defenses.base import load_recipe
from robustprune.defenses.train_loop import TrainSpec
from robustprune.results import CellConfig
from robustprune.sweep import KEY_VERSION, cell_key, plan_cells

BASELINE = Path(__file__).resolve().parents[2] / "sweeps" / "baseline.toml"

# The keys of sweeps/baseline.toml's cells under KEY_VERSION 2. A change here means every stored sweep would be
# recomputed: only ever on purpose, with KEY_VERSION raised.
PINNED = {
    ("dense", 0.0): "82d2ca32090c358d",
    ("pgd_at", 0.0): "bc5cd0a7602c8926",
    ("pgd_at", 0.5): "6204b711001643ae",
    ("magnitude", 0.0): "eb55f8ff7056d5cf",
    ("magnitude", 0.5): "4a39c8caafa7dd11",
}


@pytest.fixture(scope="module")
def cells():
    return plan_cells(SweepSpec(**read_sweep_toml(BASELINE)))


def test_the_keys_of_the_baseline_sweep_are_pinned(cells):
    assert KEY_VERSION == 2
    assert {(c.recipe, c.sparsity): c.key for c in cells} == PINNED


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSpecWithANewOption(TrainSpec):
    label_smoothing: float = 0.0  # a field a later version might add, at its default


def test_a_new_field_at_its_default_keeps_every_key(cells):
    for cell in cells:
        recipe = load_recipe(cell.recipe, [f"train.epochs={cell.config.epochs}"])
        assert cell_key(recipe, cell.config) == cell.key
        extended = dataclasses.replace(recipe, train=TrainSpecWithANewOption(**dataclasses.asdict(recipe.train)))
        assert cell_key(extended, cell.config) == cell.key
        config = CellConfig.from_json(cell.config.to_json() | {"new_optional_field": None})
        assert cell_key(recipe, config) == cell.key


def test_what_a_cell_computes_changes_its_key(cells):
    cell = next(c for c in cells if c.recipe == "pgd_at" and c.sparsity == 0.0)
    recipe = load_recipe(cell.recipe, [f"train.epochs={cell.config.epochs}"])
    keys = {
        cell_key(
            dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, lr=recipe.train.lr * 2)), cell.config
        ),
        cell_key(recipe, dataclasses.replace(cell.config, seed=1)),
        cell_key(recipe, dataclasses.replace(cell.config, data_fingerprint="0" * 64)),
        cell_key(dataclasses.replace(recipe, settings={**recipe.settings, "steps": 3}), cell.config),
    }
    assert cell.key not in keys and len(keys) == 4
    documentation = dataclasses.replace(recipe, description="reworded", paper_settings="reworded")
    assert cell_key(documentation, cell.config) == cell.key
