"""The panel of broken models: each must come out `caution` or `untrusted` with the right check failing, and,
where a generic escalation can reach the truth, no higher after escalation than the test's own correct adaptive
attack on the same examples (plus one example). The healthy controls must come out `trusted`. (Softmax outputs,
noise in forward and the rest are in the generated panel, tests/scoring/test_pathology_panel.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from broken_models import (
    NumpyFlattened,
    Quantize,
    Scaled,
    pruned,
    reference_robust,
    trained_bn_dropout_cnn,
)
from torch import nn

from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.defenses.pipeline import train_model
from robustprune.scoring import EscalationBudget, score

N = 60
EPS = 0.1
BATTERY = BatterySpec(
    name="panel",
    threat=ThreatModel(norm="Linf", eps=EPS),
    attacks=(
        AttackSpec(name="pgd", params={"steps": 40, "rel_step": 0.0625}),
        AttackSpec(name="apgd_t", params={"steps": 25, "n_target_classes": 3}),
    ),
)
PGD_ONLY = BatterySpec(name="pgd-only", threat=BATTERY.threat, attacks=BATTERY.attacks[:1])
BUDGET = EscalationBudget(square_queries=1000, steps=50, restarts=1)


@pytest.fixture(scope="module")
def data(digits_test):
    return digits_test.subset(N)


@pytest.fixture(scope="module")
def few(digits_test):
    """Fewer examples for the models whose own attacks are costly (EOT over repeated passes, Square)."""
    return digits_test.subset(N // 2)


@pytest.fixture(scope="module")
def cnn():
    artifact, manifest = train_model("dense", epochs=6, seed=0)
    return artifact.model.eval(), manifest["final"]["val_acc"]


@pytest.fixture(scope="module")
def pgd_at_cnn():
    artifact, manifest = train_model("pgd_at", epochs=4, seed=0)
    return artifact.model.eval(), manifest["final"]["val_acc"]


@pytest.fixture(scope="module")
def bn_cnn(digits_train, digits_test):
    return trained_bn_dropout_cnn(digits_train, digits_test)


def robust_count(result) -> int:
    return round(result.robust_acc * result.n_examples / 100)


def failing(result) -> dict[str, str]:
    return {c.id: c.status for c in result.health.checks if c.status in ("warn", "fail")}


@pytest.mark.parametrize("control", ["cnn", "pgd_at_cnn"])
def test_healthy_controls_are_trusted_with_no_false_alarm(control, request, data):
    model, val_acc = request.getfixturevalue(control)
    result = score(model, data, BATTERY, seed=0, reference_acc=val_acc, escalation_budget=BUDGET)
    assert result.verdict == "trusted", result.health.reasons
    assert failing(result) == {} and result.warnings == [] and result.health.escalations == []
    assert result.robust_acc == result.health.battery_robust_acc


def test_batchnorm_and_dropout_in_train_mode_are_caution_and_scored_in_eval_mode(bn_cnn, data):
    handed_over = copy.deepcopy(bn_cnn).train()
    before = {k: v.clone() for k, v in handed_over.state_dict().items()}
    result = score(handed_over, data, BATTERY, seed=0, escalation_budget=BUDGET)
    assert result.verdict == "caution" and failing(result)["S3"] == "warn"
    assert handed_over.training and all(torch.equal(before[k], v) for k, v in handed_over.state_dict().items())
    reference = reference_robust(copy.deepcopy(bn_cnn), copy.deepcopy(bn_cnn), data.x, data.y, EPS)
    assert robust_count(result) <= reference + 1


def test_input_quantization_is_caution_bpda_resolves_it_and_matches_a_bpda_attack(cnn, data):
    model, _ = cnn
    quantized = nn.Sequential(Quantize(2), model)
    result = score(quantized, data, BATTERY, seed=0, escalation_budget=BUDGET)
    checks = {c.id: c for c in result.health.checks}
    assert result.verdict == "caution" and checks["S7"].status == "warn"
    assert checks["S13"].status == "fail" and checks["S13"].resolved_by == "bpda"
    bpda = next(e for e in result.health.escalations if e.name == "bpda")
    assert bpda.skipped is None and "S7" in bpda.triggered_by and bpda.settings["modules"] == "0"
    assert any(op.startswith("round") for op in bpda.settings["ops"])  # broken_models.Quantize calls torch.round
    straight_through = nn.Sequential(Quantize(2, straight_through=True), model)
    assert robust_count(result) <= reference_robust(straight_through, quantized, data.x, data.y, EPS) + 1


@pytest.mark.parametrize("sparsity", [0.0, 0.8])
def test_saturated_logits_are_caution_and_match_pgd_on_the_unscaled_logits(sparsity, cnn, data):
    model, _ = cnn
    inner = pruned(model, sparsity) if sparsity else model
    saturated = Scaled(inner, 1e4)
    result = score(saturated, data, BATTERY, seed=0, parent=model if sparsity else None, escalation_budget=BUDGET)
    checks = {c.id: c for c in result.health.checks}
    assert result.verdict == "caution" and checks["S22"].status == "warn"
    assert checks["S13"].status == "fail" and checks["S13"].resolved_by == "logit_rescaling"
    if sparsity:
        assert checks["S21"].status == "warn"  # zero gradients the dense parent did not have
    assert robust_count(result) <= reference_robust(inner, saturated, data.x, data.y, EPS) + 1


def test_a_forward_through_numpy_is_untrusted_and_says_the_number_is_an_upper_bound(cnn, few):
    model, data = cnn[0], few
    # A short Square in the battery keeps the test fast (otherwise `score` adds AutoAttack's 5000-query Square).
    square = AttackSpec(name="square", params={"n_queries": 300, "p_init": 0.8})
    with_square = BatterySpec(name="panel+square", threat=BATTERY.threat, attacks=(*BATTERY.attacks, square))
    result = score(NumpyFlattened(model), data, with_square, seed=0, escalation_budget=BUDGET)
    assert result.verdict == "untrusted" and failing(result)["S6"] == "fail"
    assert "upper bound" in result.health.reasons[0] and "gradient attacks could not run" in result.health.reasons[0]
    assert result.autoattack_acc is None
    skipped = [a for a in result.attacks if a.role == "battery" and a.name != "square"]
    assert skipped and all(a.skipped and "S6" in a.skipped for a in skipped)
    more = {e.name: e for e in result.health.escalations}["more_queries"]
    assert more.triggered_by[0] == "S6" and more.n_attempted > 0  # the gradient-free escalation still ran
    assert more.settings["n_queries"] == BUDGET.square_queries
    assert robust_count(result) < round(result.clean_acc * len(data) / 100)
