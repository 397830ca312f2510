"""The recipes of issue 12 round-trip through `train` and `score` on the command line: trained (briefly), saved,
read back by `score` from the checkpoint alone, and scored exactly like the model in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustprune.cli import main
from robustprune.defenses.base import DEFENSES, load_recipe
from robustprune.models import load_checkpoint
from robustprune.scoring import score

FAST = ["--set", "train.probe_steps=1", "--set", "train.probe_size=16"]
NEW = {  # recipe -> (sparsity, extra overrides)
    "magnitude_ap": (0.8, []),
    "scratch_b": (0.5, []),
    "hydra": (0.5, ["--set", "settings.score_epochs=1", "--set", "settings.steps=1"]),
    "dam": (0.5, ["--set", "settings.cold_epochs=1"]),
    "structured": (0.5, []),
    "structured_agp": (0.5, []),
}


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parent")
    assert main(["train", "--recipe", "dense", "--epochs", "1", *FAST, "--out", str(out)]) == 0
    return out / "model.safetensors"


@pytest.mark.parametrize("name", sorted(NEW))
def test_new_recipe_round_trips_through_train_and_score(name: str, parent: Path, tmp_path: Path, capsys) -> None:
    sparsity, extra = NEW[name]
    recipe = load_recipe(name)
    epochs = ["--epochs", "4" if name in ("magnitude_ap", "dam") else "1"]
    parent_args = ["--parent", str(parent)] if recipe.needs_parent else []
    out = tmp_path / "run"
    args = ["train", "--recipe", name, "--sparsity", str(sparsity), *epochs, *parent_args, *FAST, *extra]
    assert main([*args, "--out", str(out)]) == 0
    manifest = json.loads((out / "model.manifest.json").read_text())
    unit = manifest["sparsity"]["target_unit"]
    achieved = manifest["sparsity"]["channels"]["sparsity"] if unit == "channels" else manifest["sparsity"]["achieved"]
    assert abs(achieved - sparsity) <= 0.01
    scored = tmp_path / "score"
    assert (
        main(
            [
                "score",
                "--model",
                recipe.architecture,
                "--checkpoint",
                str(out / "model.safetensors"),
                "--battery",
                "quick",
                "--n",
                "8",
                "--out",
                str(scored),
            ]
        )
        == 0
    )
    on_disk = json.loads((scored / "results.json").read_text())
    shell = DEFENSES.get(recipe.defense)(recipe).build_model(10, (1, 8, 8))
    loaded, info = load_checkpoint(shell, out / "model.safetensors")
    again = score(loaded, "digits", "quick", n=8, seed=0, checkpoint=info.to_dict(), efficiency=False).document
    # the battery's per-sample outcome is the same; `score` on the command line adds probes that read the
    # checkpoint's manifest (its parent, say), which the in-memory call does not get
    battery = [a["label"] for a in on_disk["attacks"] if a["role"] == "battery"]
    for key in ("clean_pred", "clean_correct", "index", "label"):
        assert on_disk["per_sample"][key] == again["per_sample"][key]
    for label in battery:
        assert on_disk["per_sample"]["attacks"][label] == again["per_sample"]["attacks"][label]
    if unit == "channels":  # structured: the compacted model is smaller and was timed
        assert on_disk["efficiency"]["compact_params"] < on_disk["efficiency"]["params"]
    assert "efficiency:" in capsys.readouterr().out
