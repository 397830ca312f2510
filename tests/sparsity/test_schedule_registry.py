"""Every registered pruning schedule reaches its target through the shared driver (one short fit on digits);
adding a schedule adds it here by itself."""

from __future__ import annotations

import pytest

from robustprune.defenses.base import load_recipe
from robustprune.defenses.pipeline import train_model
from robustprune.sparsity import SCHEDULES, sparsity_report


@pytest.mark.parametrize("schedule", SCHEDULES.names())
def test_schedule_reaches_the_target(schedule):
    recipe = load_recipe("magnitude_agp", ["train.epochs=3", "train.probe_steps=1", f"pruning.schedule={schedule}"])
    artifact, manifest = train_model(recipe, sparsity=0.6, seed=0)
    assert abs(sparsity_report(artifact.model)["sparsity"] - 0.6) <= 0.005
    assert manifest["pruning"]["schedule"] == schedule
