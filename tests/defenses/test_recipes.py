"""Every built-in recipe (robustprune/builtin/defenses/) loads and validates; the recipes of issue #3 document their paper settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustprune.config import BUILTIN_DIR
from robustprune.defenses.base import DEFENSES, PruningSpec, load_recipe
from robustprune.errors import UsageError

RECIPE_DIR = BUILTIN_DIR / "defenses"
ALL = sorted(RECIPE_DIR.glob("*.toml"))
OURS = {
    "dense": ("standard", None),
    "pgd_at": ("pgd_at", None),
    "trades": ("trades", None),
    "fgsm_rs": ("fgsm_rs", None),
    "magnitude": ("standard", "one_shot"),
    "magnitude_iterative": ("standard", "iterative"),
    "magnitude_agp": ("standard", "agp"),
    "magnitude_one_cycle": ("standard", "one_cycle"),
    "scratch": ("standard", "one_shot"),
}


def test_recipe_dir_has_the_issue_recipes() -> None:
    assert OURS.keys() <= {p.stem for p in ALL}


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_every_recipe_loads(path: Path) -> None:
    recipe = load_recipe(str(path))
    assert recipe.defense in DEFENSES
    assert recipe.name == path.stem
    assert recipe.train.epochs >= 1


@pytest.mark.parametrize("name", sorted(OURS))
def test_issue_recipes_are_digits_ready_and_documented(name: str) -> None:
    recipe = load_recipe(name)
    defense, schedule = OURS[name]
    assert recipe.defense == defense
    assert recipe.architecture == "digits_cnn"
    assert any(word in recipe.paper_settings for word in ("CIFAR", "Zhu & Gupta", "Hubens"))
    assert recipe.description
    assert recipe.train.epochs <= 10  # well under a minute on digits
    assert recipe.train.probe_eps == 0.1
    if "eps" in recipe.settings:
        assert recipe.settings["eps"] == 0.1
    if schedule is None:
        assert recipe.pruning is None
    else:
        assert isinstance(recipe.pruning, PruningSpec) and recipe.pruning.schedule == schedule
    assert recipe.needs_parent == (name in {"magnitude", "magnitude_iterative", "scratch"})
    assert (recipe.pruning is not None and recipe.pruning.reinit) == (name == "scratch")


def test_fgsm_rs_recipe_matches_the_paper_ratios() -> None:
    recipe = load_recipe("fgsm_rs")
    assert recipe.settings["alpha_factor"] == 1.25 and recipe.settings["guard_drop"] == 0.2
    assert recipe.train.schedule == "cyclic"


def test_overrides_apply_and_unknown_keys_fail() -> None:
    recipe = load_recipe("pgd_at", ["train.epochs=2", "settings.steps=3", "pruning.schedule=agp"])
    assert recipe.train.epochs == 2 and recipe.settings["steps"] == 3 and recipe.pruning.schedule == "agp"
    for bad in (
        ["train.bogus=1"],
        ["settings.bogus=1"],
        ["bogus=1"],
        ["pruning.schedule=cubic"],
        ["pruning.criterion=nope"],
        ["settings.eps=2.0"],
        ["train.epochs=two"],
        ["noequals"],
        ["pruning.start_fraction=0.9"],
    ):
        with pytest.raises(UsageError):
            load_recipe("pgd_at", bad)
