"""DIO: the multi-head model, its loss, its training, and scoring that does not flatter a randomized defense."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustprune.attacks.battery import run_battery
from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.defenses.base import DEFENSES, load_recipe
from robustprune.defenses.dio import margin_loss, orthogonality_penalty
from robustprune.defenses.train_loop import StepContext
from robustprune.errors import UsageError
from robustprune.models import build_model, load_checkpoint, save_checkpoint
from robustprune.models.dio import DIOModel
from robustprune.render.html import render_html
from robustprune.render.markdown import render_markdown
from robustprune.render.text import summary_table
from robustprune.scoring import score
from robustprune.scoring.health import HEALTH_CHECKS
from robustprune.scoring.multihead import multihead_report
from robustprune.sparsity import apply_masks, current_masks, global_magnitude, prunable_modules, sparsity_report

HEADS = 4  # fewer heads than the published 10 keep the per-head scoring in these tests fast


@pytest.fixture(scope="module")
def trained(digits_train, digits_test) -> tuple[dict[str, torch.Tensor], list[dict]]:
    recipe = load_recipe("dio", [f"settings.heads={HEADS}", "train.epochs=6", "train.probe_steps=2"])
    defense = DEFENSES.get("dio")(recipe)
    torch.manual_seed(0)
    model = defense.build_model(10, digits_train.input_shape)
    artifact = defense.run(model, digits_train, digits_test, sparsity=0.0, parent=None, seed=0)
    assert artifact.model.mode == "random"  # deployed as published
    return {k: v.clone() for k, v in artifact.model.state_dict().items()}, artifact.log


def without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "seconds"}


def single_head_model() -> torch.nn.Module:
    """Any single-head model: its report has no Heads section."""
    torch.manual_seed(0)
    return build_model("mlp", 10, (1, 8, 8)).eval()


def fresh(state: dict[str, torch.Tensor]) -> DIOModel:
    model = build_model("dio_digits_cnn", 10, (1, 8, 8), heads=HEADS)
    model.load_state_dict(state)
    return model.eval()


def test_heads_are_bias_free_linear_and_counted_as_prunable():
    model = build_model("dio_digits_cnn", 10, (1, 8, 8))
    assert model.n_heads == 10 and model.mode == "random"
    assert all(isinstance(h, torch.nn.Linear) and h.bias is None and h.weight.shape == (10, 128) for h in model.heads)
    names = [name for name, _ in prunable_modules(model)]
    assert [n for n in names if n.startswith("heads.")] == [f"heads.{i}" for i in range(10)]
    assert not any(isinstance(m, torch.nn.Linear) and m.out_features == 10 for m in model.backbone.modules())
    x = torch.rand(5, 1, 8, 8)
    assert model.all_head_logits(x).shape == (10, 5, 10)


def test_modes_fixed_mean_random():
    torch.manual_seed(1)
    model = build_model("dio_digits_cnn", 10, (1, 8, 8), heads=5)
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        heads = model.all_head_logits(x)
        model.set_mode("fixed", 3)
        assert torch.equal(model(x), model(x)) and torch.allclose(model(x), heads[3])
        model.set_mode("mean")
        assert torch.allclose(model(x), heads.mean(dim=0), atol=1e-6)
        model.set_mode("random")
        used = set()
        for _ in range(200):
            out = model(x)
            used.add(model.last_head)
            assert torch.allclose(out, heads[model.last_head])  # one head for the whole batch
    assert len(used) > 1  # P(one head in 200 draws out of 5) = 5 * 5**-200
    with pytest.raises(UsageError, match="head index"):
        model.set_mode("fixed")
    with pytest.raises(UsageError, match="not one of"):
        model.set_mode("vote")


def test_orthogonality_penalty_and_margin_loss_values():
    eye = torch.eye(4)
    orthogonal = torch.stack([eye[:2], eye[2:]])  # two 2x4 heads with disjoint rows
    assert orthogonality_penalty(orthogonal) == 0
    same = torch.stack([eye[:2], eye[:2], eye[2:]])  # <W0, W1>_F = 2, every other pair 0
    assert orthogonality_penalty(same).item() == pytest.approx(4.0)
    # One head, unit rows: example 0 is right with margin 0.05 (loss 0.2 - 0.05), example 1 is wrong (skipped).
    w = torch.eye(3).unsqueeze(0)
    logits = torch.tensor([[[1.0, 0.95, 0.0], [0.0, 1.0, 0.0]]])
    y = torch.tensor([0, 0])
    assert margin_loss(logits, y, w, tau=0.2).item() == pytest.approx(0.15)
    w2 = w * 2  # distances are divided by the row norm: margin 0.025
    assert margin_loss(logits, y, w2, tau=0.2).item() == pytest.approx(0.175)
    assert margin_loss(logits, torch.tensor([2, 2]), w, tau=0.2).item() == 0  # no correct example: skipped


def test_training_drives_the_heads_orthogonal(trained):
    _, log = trained
    first, last = log[0]["ortho_penalty"], log[-1]["ortho_penalty"]
    assert last < 0.2 * first, (first, last)
    assert log[-1]["ortho_penalty_end"] < log[0]["ortho_penalty_end"]
    assert len(log[-1]["head_val_acc"]) == HEADS and log[-1]["head_val_acc_min"] > 0.85
    assert all({"ce", "margin_loss"} <= set(e) for e in log)


def test_scoring_random_dio_is_randomized_adaptive_and_per_head(trained, digits_test, monkeypatch):
    model = fresh(trained[0])
    model.set_mode("fixed", 1)  # scored in random mode anyway, and restored afterwards
    determinism = HEALTH_CHECKS.get("S2")  # S2 "misses" the randomness
    monkeypatch.setattr(type(determinism), "evaluate", lambda self, ctx: self.result("pass", 0.0, "patched"))
    doc = score(model, digits_test, "quick", eps=0.1, n=48, batch_size=48).document
    assert model.mode == "fixed" and model.head == 1
    assert doc["randomized"] is True and doc["n_eval_passes"] == 10
    assert [a["name"] for a in doc["attacks"] if a["role"] == "battery"] == ["all_heads_pgd", "fgsm", "pgd"]
    assert doc["provenance"]["battery"]["attacks"][0]["name"] == "all_heads_pgd"
    assert doc["provenance"]["battery_additions"][0]["attack"] == "all_heads_pgd"
    mh = doc["multi_head"]
    assert mh["randomized"] and mh["n_heads"] == HEADS and mh["adaptive_attack"]["name"] == "all_heads_pgd"
    assert len(mh["per_head_robust_acc"]) == len(mh["per_head_clean_acc"]) == HEADS
    assert mh["worst_head_robust_acc"] == min(mh["per_head_robust_acc"]) <= mh["mean_head_robust_acc"]
    assert mh["mean_head_robust_acc"] == pytest.approx(np.mean(mh["per_head_robust_acc"]))
    assert all(r <= c for r, c in zip(mh["per_head_robust_acc"], mh["per_head_clean_acc"], strict=True))
    with torch.no_grad():  # per-head clean accuracy is that head's own accuracy (fixed mode)
        heads = model.all_head_logits(digits_test.x[:48]).argmax(dim=2)
    expected = (100 * (heads == digits_test.y[:48]).double().mean(dim=1)).tolist()
    assert mh["per_head_clean_acc"] == pytest.approx(expected)
    # The randomized verdict needs every pass right: no better than the best single head.
    assert doc["robust_acc"] <= max(mh["per_head_robust_acc"])
    # Every report shows the heads: each head's numbers and the worst one.
    md, html, text = render_markdown(doc), render_html(doc), summary_table(doc)
    worst = f"{mh['worst_head_robust_acc']:.2f}"
    assert "## Heads" in md and md.count(" | worst |") >= 1 and worst in md
    assert 'id="heads"' in html and worst in html
    assert f"worst head robust {worst} %" in text
    assert "## Heads" not in render_markdown(score(single_head_model(), digits_test, "quick", eps=0.1, n=8).document)
    # The per-head runs are part of the cost.
    assert mh["n_forward"] > 0 and mh["n_backward"] > 0
    assert doc["cost"]["n_forward"] == sum(a["n_forward"] for a in doc["attacks"]) + mh["n_forward"]
    assert doc["cost"]["n_backward"] == sum(a["n_backward"] for a in doc["attacks"]) + mh["n_backward"]


def test_the_recorded_adaptive_attack_is_the_one_that_ran(trained, digits_test):
    own = AttackSpec(name="all_heads_pgd", params={"steps": 3, "eot_iter": 2})
    battery = BatterySpec(name="own", threat=ThreatModel(norm="Linf", eps=0.1), attacks=(own,))
    doc = score(fresh(trained[0]), digits_test, battery, n=24, seed=0, head_battery="quick").document
    assert doc["provenance"]["battery_additions"][0]["added"] is False  # the battery already had it
    adaptive = doc["multi_head"]["adaptive_attack"]
    assert adaptive["steps"] == 3 and adaptive["eot_iter"] == 2 and doc["multi_head"]["per_head_battery"] == "quick"


def test_ordinary_models_get_no_multi_head_block(trained_mlp, digits_test):
    battery = BatterySpec(name="b", threat=ThreatModel(norm="Linf", eps=0.1), attacks=(AttackSpec(name="fgsm"),))
    assert multihead_report(trained_mlp, digits_test.subset(10), battery, seed=0, batch_size=10) is None
    doc = score(trained_mlp, digits_test, battery, n=20).document
    assert "multi_head" not in doc and [a["name"] for a in doc["attacks"] if a["role"] == "battery"] == ["fgsm"]


@pytest.mark.parametrize("norm,eps", [("Linf", 0.1), ("L2", 1.0)])
def test_all_heads_pgd_output_is_verified_by_the_engine(trained, digits_test, norm, eps):
    model = fresh(trained[0])
    battery = BatterySpec(
        name="adaptive",
        threat=ThreatModel(norm=norm, eps=eps),
        attacks=(AttackSpec(name="all_heads_pgd", params={"steps": 10, "rel_step": 0.25}),),
    )
    x, y = digits_test.x[:40], digits_test.y[:40]
    torch.manual_seed(0)
    out = run_battery(model, x, y, battery, num_classes=10, seed=0, batch_size=20, n_passes=10)  # verifies
    cols, record = out.columns["all_heads_pgd"], out.records[0]
    assert cols.attempted.sum() > 0 and record.n_broken > 0  # the attack works at all
    assert np.nanmax(cols.norm) <= eps + 1e-6
    assert record.n_forward == 11 * record.n_attempted and record.n_backward == 10 * record.n_attempted


def test_all_heads_pgd_falls_back_to_eot_on_ordinary_models(trained_mlp, digits_test):
    battery = BatterySpec(
        name="adaptive",
        threat=ThreatModel(norm="Linf", eps=0.1),
        attacks=(AttackSpec(name="all_heads_pgd", params={"steps": 10, "eot_iter": 2}),),
    )
    out = run_battery(trained_mlp, digits_test.x[:40], digits_test.y[:40], battery, num_classes=10, seed=0)
    record = out.records[0]
    assert record.n_broken > 0 and record.n_forward == 2 * 11 * record.n_attempted


def test_pruned_dio_checkpoint_round_trips_and_scores_unchanged(trained, digits_test, tmp_path):
    model = fresh(trained[0])
    masks = global_magnitude(model, 0.5)
    apply_masks(model, masks)
    n_total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.5 * n_total)
    report = sparsity_report(model, (1, 8, 8))
    assert report["sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert any(row["name"].startswith("heads.") and row["sparsity"] > 0 for row in report["layers"])
    info = save_checkpoint(model, tmp_path / "dio.safetensors", {"architecture": "dio_digits_cnn"})
    loaded, loaded_info = load_checkpoint(build_model("dio_digits_cnn", 10, (1, 8, 8), heads=HEADS), info.path)
    assert isinstance(loaded, DIOModel) and not loaded_info.trusted and loaded.mode == "random"
    assert all(torch.equal(masks[k], v) for k, v in current_masks(loaded).items())
    a = score(model, digits_test, "quick", eps=0.1, n=30, seed=3).document
    b = score(loaded, digits_test, "quick", eps=0.1, n=30, seed=3).document
    assert a["per_sample"] == b["per_sample"]
    assert without_timing(a["multi_head"]) == without_timing(b["multi_head"])
    assert b["sparsity"]["sparsity"] == pytest.approx(0.5, abs=1e-6)


def test_dio_at_crafts_in_eval_mode_with_a_new_random_head_at_every_step(digits_train, monkeypatch):
    # the official train.py: advertorch's PGD calls the random-head forward once per iteration, under model.eval()
    recipe = load_recipe("dio_at", ["settings.heads=4", "settings.pgd_steps=8"])
    defense = DEFENSES.get("dio")(recipe)
    torch.manual_seed(0)
    model = defense.build_model(10, digits_train.input_shape).train()
    calls: list[tuple[int, bool]] = []
    original = DIOModel.head_logits

    def recording(self, x, head):
        calls.append((head, self.training))
        return original(self, x, head)

    monkeypatch.setattr(DIOModel, "head_logits", recording)
    loss = defense.make_loss(digits_train)
    ctx = StepContext(epoch=0, step=0, total_steps=1, model=model, optimizer=None)
    loss(model, digits_train.x[:16], digits_train.y[:16], ctx)
    # one single-head forward per PGD step (the objective itself reads every head at once), all in eval mode
    assert len(calls) == 8 and not any(training for _, training in calls)
    assert len({head for head, _ in calls}) > 1  # a new head at every step, not one per batch
    assert model.training  # handed back in train mode for the update
