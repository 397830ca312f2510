"""Every registered defense trains one epoch on digits through a shipped recipe (one epoch per phase where a
defense has several) and round-trips through score: the saved and reloaded model scores exactly like the trained
one. Adding a defense adds it here by itself."""

from __future__ import annotations

import pytest

from robustprune.config import BUILTIN_DIR
from robustprune.defenses.base import DEFENSES, load_recipe
from robustprune.defenses.pipeline import save_trained, train_model
from robustprune.models import load_checkpoint
from robustprune.scoring import score

RECIPES = sorted(p.stem for p in (BUILTIN_DIR / "defenses").glob("*.toml"))


def recipe_for(defense: str) -> str:
    """The first shipped recipe of `defense` that needs no parent (else the first at all)."""
    mine = [r for r in RECIPES if load_recipe(r).defense == defense]
    assert mine, f"defense {defense!r} has no recipe in robustprune/builtin/defenses/: add one"
    return next((r for r in mine if not load_recipe(r).needs_parent), mine[0])


@pytest.mark.parametrize("defense", DEFENSES.names())
def test_defense_trains_one_epoch_and_round_trips_through_score(defense, tmp_path):
    name = recipe_for(defense)
    settings = load_recipe(name).settings
    one_per_phase = {"finetune_epochs": 1, "score_epochs": 1, "cold_epochs": 0}  # Deadwooding, HYDRA, DAM
    phases = [f"settings.{key}={value}" for key, value in one_per_phase.items() if key in settings]
    recipe = load_recipe(name, ["train.epochs=1", "train.probe_steps=1", *phases])
    parent = None
    if recipe.needs_parent:
        parent_artifact, _ = train_model(load_recipe("dense", ["train.epochs=1"]), seed=0)
        parent = parent_artifact.model
    sparsity = 0.5 if recipe.needs_parent else 0.0
    artifact, manifest = train_model(recipe, sparsity=sparsity, parent=parent, seed=0)
    info = save_trained(artifact, manifest, tmp_path)
    shell = DEFENSES.get(recipe.defense)(recipe).build_model(10, (1, 8, 8))
    loaded, _ = load_checkpoint(shell, info.path)
    a = score(artifact.model, "digits", "quick", eps=0.1, n=16, seed=0).document
    b = score(loaded, "digits", "quick", eps=0.1, n=16, seed=0).document
    assert a["per_sample"] == b["per_sample"]
    assert manifest["defense"] == defense and 1 <= len(manifest["log"]) <= 2
