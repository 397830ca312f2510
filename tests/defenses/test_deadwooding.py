"""Deadwooding (reconstruction): dual ascent, exact one-shot global prune, KD + FGSM fine-tuning, both formulations."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from robustprune.defenses.base import DEFENSES, PruningSpec, load_recipe
from robustprune.defenses.deadwooding import DualAscent, deadwood_mass
from robustprune.defenses.train_loop import TrainSpec, accuracy, fit
from robustprune.errors import UsageError
from robustprune.models import build_model
from robustprune.sparsity import current_masks, sparsity_report


@pytest.fixture(scope="module")
def parent(digits_train, digits_test) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, digits_train.input_shape)
    fit(
        model,
        digits_train,
        digits_test,
        TrainSpec(epochs=6, optimizer="adam", lr=3e-3, weight_decay=0.0, probe_steps=1),
        seed=0,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


def dense_parent(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = build_model("digits_cnn", 10, (1, 8, 8))
    model.load_state_dict(state)
    return model.eval()


def run(state, train, val, sparsity: float, overrides: list[str]):
    recipe = load_recipe("deadwooding", ["train.probe_steps=1", *overrides])
    defense = DEFENSES.get("deadwooding")(recipe)
    model = defense.build_model(10, train.input_shape)
    return defense.run(model, train, val, sparsity=sparsity, parent=dense_parent(state), seed=0)


def test_deadwood_mass_and_dual_update():
    w = [torch.tensor([1.0, -2.0]), torch.tensor([[3.0, 4.0]])]
    assert deadwood_mass(w, 0.5).item() == pytest.approx(0.3)  # (1 + 2) / 10, global over both tensors
    assert deadwood_mass(w, 0.0).item() == 0
    dual = DualAscent(("mass",), {"mass": 0.1}, step=2.0, lambda0=0.5)
    for g in (0.3, 0.5):  # violations 0.2 and 0.4: mean 0.3
        dual.penalty({"mass": torch.tensor(g)})
    entry = dual.on_epoch_end(None)
    assert entry["violation_mass"] == pytest.approx(0.3) and entry["lambda_mass"] == pytest.approx(0.5 + 2 * 0.3)
    dual.penalty({"mass": torch.tensor(0.0)})
    assert dual.on_epoch_end(None)["lambda_mass"] == pytest.approx(1.1)  # satisfied: λ stays


def test_recipe_needs_parent_and_validates(digits_train, digits_test):
    recipe = load_recipe("deadwooding")
    assert recipe.needs_parent and "T=4" in recipe.paper_settings and "delta=1e-3" in recipe.paper_settings
    with pytest.raises(UsageError, match="formulation"):
        load_recipe("deadwooding", ['settings.formulation="l1"'])
    with pytest.raises(UsageError, match="one-shot"):
        load_recipe("deadwooding", ['pruning.schedule="agp"'])
    defense = DEFENSES.get("deadwooding")(recipe)
    with pytest.raises(UsageError, match="dense parent"):
        defense.run(defense.build_model(10, (1, 8, 8)), digits_train, digits_test, sparsity=0.5, parent=None, seed=0)


def check_multipliers(log: list[dict], names: tuple[str, ...]) -> None:
    dual = [e for e in log if e["phase"] == "dual"]
    finetune = [e for e in log if e["phase"] == "finetune"]
    assert dual and finetune
    for name in names:
        values = [e[f"lambda_{name}"] for e in dual]
        assert values == sorted(values)  # dual ascent never lowers λ
        for e in dual:
            if e[f"violation_{name}"] > 0:
                assert e[f"lambda_{name}"] > e[f"lambda_{name}_used"]
            assert f"constraint_{name}" in e
        assert {e[f"lambda_{name}"] for e in finetune} == {values[-1]}  # frozen while fine-tuning
    assert any(e[f"violation_{names[0]}"] > 0 for e in dual)  # the test saw the multiplier react


def check_sparsity(model: torch.nn.Module, target: float) -> None:
    masks = current_masks(model)
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(target * total)  # exact count
    assert abs(sparsity_report(model)["sparsity"] - target) <= 0.005


def test_mass_formulation_keeps_accuracy_at_half_sparsity(parent, digits_train, digits_test):
    dense = accuracy(dense_parent(parent), digits_test.x, digits_test.y)
    art = run(parent, digits_train, digits_test, 0.5, ["train.epochs=3", "settings.finetune_epochs=2"])
    check_multipliers(art.log, ("mass",))
    dual = [e for e in art.log if e["phase"] == "dual"]
    assert dual[-1]["constraint_mass"] < 0.5 * dual[0]["constraint_mass"]  # the primal pushes the dead wood down
    check_sparsity(art.model, 0.5)
    pruned = accuracy(art.model, digits_test.x, digits_test.y)
    assert pruned >= dense - 0.03, (dense, pruned)
    assert art.extra["formulation"] == "mass" and "reconstruct" in art.extra["reconstruction"]
    assert art.extra["pruning"]["schedule"] == "one_shot" and [e["epoch"] for e in art.log] == [1, 2, 3, 4, 5]


def test_closeness_formulation_runs_with_one_multiplier_per_constraint(parent, digits_train, digits_test):
    dense = accuracy(dense_parent(parent), digits_test.x, digits_test.y)
    art = run(
        parent,
        digits_train,
        digits_test,
        0.7,
        ['settings.formulation="closeness"', "train.epochs=2", "settings.finetune_epochs=1"],
    )
    check_multipliers(art.log, ("kd_clean", "kd_adv"))
    check_sparsity(art.model, 0.7)
    assert accuracy(art.model, digits_test.x, digits_test.y) >= dense - 0.05
    assert set(art.extra["lambdas"]) == {"kd_clean", "kd_adv"}


def test_exclude_keeps_a_layer_dense_and_still_hits_the_headline(parent, digits_train, digits_test):
    recipe = load_recipe("deadwooding", ["train.epochs=1", "settings.finetune_epochs=0", "train.probe_steps=1"])
    recipe = replace(recipe, pruning=PruningSpec(exclude=("features.0",)))
    defense = DEFENSES.get("deadwooding")(recipe)
    art = defense.run(
        defense.build_model(10, (1, 8, 8)), digits_train, digits_test, sparsity=0.5, parent=dense_parent(parent), seed=0
    )
    assert bool(current_masks(art.model)["features.0"].all())
    assert abs(sparsity_report(art.model)["sparsity"] - 0.5) <= 0.005


def test_a_reconstruction_says_so_in_its_manifest_and_its_score_summary(parent, digits_test, tmp_path):
    from robustprune.defenses.base import Defense
    from robustprune.defenses.pipeline import save_trained, summary, train_model
    from robustprune.models import load_checkpoint
    from robustprune.render.text import summary_table
    from robustprune.scoring import score

    assert DEFENSES.get("deadwooding").reconstruction is True and Defense.reconstruction is False
    assert not any(DEFENSES.get(name).reconstruction for name in DEFENSES.names() if name != "deadwooding")
    overrides = ["train.probe_steps=1", "train.probe_size=16", "settings.finetune_epochs=0"]
    artifact, manifest = train_model(
        "deadwooding", sparsity=0.5, parent=dense_parent(parent), epochs=1, overrides=overrides
    )
    assert manifest["reconstruction"] is True and manifest["defense"] == "deadwooding"
    assert "deadwooding is a RECONSTRUCTION" in summary(manifest)  # what `train` prints
    _, dense_manifest = train_model("dense", epochs=1, overrides=["train.probe_steps=1", "train.probe_size=16"])
    assert "reconstruction" not in dense_manifest  # only reconstructions carry the key
    # `score` of the checkpoint records the manifest (provenance) and prints the mark
    info = save_trained(artifact, manifest, tmp_path)
    model, loaded = load_checkpoint(build_model("digits_cnn", 10, (1, 8, 8)), info.path)
    result = score(model, digits_test, "quick", eps=0.1, n=16, checkpoint=loaded.to_dict())
    assert result.provenance.checkpoint.manifest["reconstruction"] is True
    assert "defense deadwooding is a RECONSTRUCTION" in summary_table(result)
    dense = build_model("digits_cnn", 10, (1, 8, 8)).eval()
    assert "RECONSTRUCTION" not in summary_table(score(dense, digits_test, "quick", eps=0.1, n=16))
