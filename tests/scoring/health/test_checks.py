"""Every health check, one at a time: it passes on a healthy model and fires on a model built to trip it.

Model checks are evaluated on their own; outcome checks run after a battery, with only their own probe (so one
check's probe cannot take the examples another's would have broken), through the same engine `score` uses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from broken_models import (
    Detached,
    InputDropout,
    NaNGradient,
    Noisy,
    Oscillating,
    Purifying,
    Quantize,
    Scaled,
    Softmax,
    pruned,
    unapplied_mask,
)
from torch import nn

from robustprune.attacks.base import ATTACKS, Attack
from robustprune.attacks.battery import run_battery
from robustprune.attacks.pgd_core import cross_entropy_objective, pgd
from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.models import build_model
from robustprune.scoring import EscalationBudget, score
from robustprune.scoring.health import HEALTH_CHECKS, STATUSES, HealthContext, check_model, run_outcome_check

N = 60
EPS = 0.1
PGD = AttackSpec(name="pgd", params={"steps": 20})
APGD_T = AttackSpec(name="apgd_t", params={"steps": 20, "n_target_classes": 3})
WEAK_PGD = AttackSpec(name="pgd", params={"steps": 2, "rel_step": 0.05})
BUDGET = EscalationBudget(square_queries=300, steps=20, restarts=1)


def battery(*attacks: AttackSpec, eps: float = EPS) -> BatterySpec:
    return BatterySpec(name="test", threat=ThreatModel(norm="Linf", eps=eps), attacks=attacks)


@pytest.fixture(scope="module")
def mlp(_trained_mlp_state) -> nn.Module:
    model = build_model("mlp", 10, (1, 8, 8))
    model.load_state_dict(_trained_mlp_state)
    return model.eval()


@pytest.fixture(scope="module")
def data(digits_test):
    return digits_test.subset(N)


def context(model: nn.Module, data, spec: BatterySpec, **kwargs) -> HealthContext:
    return HealthContext(
        model=model.eval() if not kwargs.pop("train", False) else model,
        x=data.x,
        y=data.y,
        num_classes=data.num_classes,
        battery=spec,
        seed=0,
        batch_size=256,
        **kwargs,
    )


def model_check(check_id: str, model: nn.Module, data, spec: BatterySpec | None = None, **kwargs):
    ctx = context(model, data, spec or battery(PGD, APGD_T), **kwargs)
    ctx.cache["train_mode_modules"] = [n or "<model>" for n, m in model.named_modules() if m.training]
    return check_model(ctx)[check_id]


def outcome_check(check_id: str, model: nn.Module, data, spec: BatterySpec, **kwargs):
    """Run the model checks (they decide how the model is attacked), the battery, then this check alone."""
    ctx = context(model, data, spec, **kwargs)
    check_model(ctx)
    ctx.outcome = run_battery(
        model,
        data.x,
        data.y,
        spec,
        num_classes=data.num_classes,
        seed=0,
        gradients=ctx.gradients,
        parent=ctx.parent,
    )
    return run_outcome_check(ctx, HEALTH_CHECKS.get(check_id)), ctx


@pytest.fixture(scope="module")
def healthy(mlp, data):
    """A pruned MLP, its dense parent and the clean accuracy recorded for it: a run where every check applies."""
    model = pruned(mlp, 0.5)
    reference = score(model, data, battery(PGD, APGD_T), seed=0, escalation_budget=BUDGET).clean_acc / 100
    return score(
        model, data, battery(PGD, APGD_T), seed=0, parent=mlp, reference_acc=reference, escalation_budget=BUDGET
    )


def test_every_registered_check_passes_on_a_healthy_pruned_model(healthy):
    checks = {c.id: c for c in healthy.health.checks}
    assert sorted(checks) == sorted(HEALTH_CHECKS.names())
    assert len(checks) >= 20
    not_passing = {i: (c.status, c.message) for i, c in checks.items() if c.status != "pass"}
    # S25 judges the attacks against the exact search, which only --certify exact runs
    assert not_passing == {"S25": ("skip", "no exact search ran (--certify exact)")}
    assert healthy.verdict == "trusted" and healthy.health.escalations == []
    assert healthy.health.reasons == []


def test_every_check_result_has_the_promised_fields(healthy):
    for check in healthy.health.checks:
        doc = check.to_json()
        assert {"id", "name", "status", "value", "threshold", "message", "how_to_fix"} <= set(doc)
        assert doc["status"] in STATUSES and doc["threshold"] and doc["name"]
        registered = HEALTH_CHECKS.get(check.id)
        assert registered.how_to_fix, f"{check.id} has no how-to-fix advice"


# -- model checks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check_id", "build", "status"),
    [
        ("S1", Softmax, "warn"),
        ("S2", lambda m: Noisy(m, 0.1), "warn"),
        ("S4", Purifying, "warn"),
        ("S6", Detached, "fail"),
        ("S7", lambda m: nn.Sequential(Quantize(2), m), "warn"),
        ("S7", NaNGradient, "fail"),
        ("S16", Oscillating, "warn"),
        ("S22", lambda m: Scaled(m, 1e4), "warn"),
    ],
)
def test_a_model_check_fires_on_a_model_built_to_trip_it(check_id, build, status, mlp, data):
    result = model_check(check_id, build(mlp), data)
    assert result.status == status, result.message
    assert result.how_to_fix
    assert model_check(check_id, mlp, data).status == "pass"


def test_s3_fires_for_dropout_left_in_train_mode_and_not_for_a_model_in_eval_mode(mlp, data):
    model = InputDropout(mlp).train()
    result = model_check("S3", model, data, train=True)
    assert result.status == "warn" and "train mode" in result.message
    assert model_check("S3", InputDropout(mlp).eval(), data).status == "pass"


def test_s5_fires_when_a_targeted_attack_asks_for_more_targets_than_exist(mlp, data):
    greedy = AttackSpec(name="apgd_t", params={"steps": 10, "n_target_classes": 20})
    result = model_check("S5", mlp, data, battery(PGD, greedy))
    assert result.status == "warn" and "9" in result.message
    assert model_check("S5", mlp, data, battery(PGD, APGD_T)).status == "pass"
    assert model_check("S5", mlp, data, battery(PGD)).status == "skip"


def test_s7_names_the_layer_that_stops_the_gradient(mlp, data):
    result = model_check("S7", nn.Sequential(Quantize(2), mlp), data)
    assert "0 (Quantize)" in result.message


# -- outcome checks ---------------------------------------------------------------------------------------------


def test_s8_fires_when_the_square_sentinel_beats_masked_gradients(mlp, data):
    result, _ = outcome_check("S8", nn.Sequential(Quantize(2), mlp), data, battery(PGD, APGD_T))
    assert result.status == "warn" and result.value >= 1


def test_s9_fires_when_the_parents_gradient_breaks_what_the_battery_left(mlp, data):
    masked = Scaled(pruned(mlp, 0.8), 1e4)  # saturated: cross-entropy PGD sees no gradient
    result, ctx = outcome_check("S9", masked, data, battery(PGD), parent=mlp)
    assert result.status == "warn" and result.value >= 1
    # what transfer broke is verified against the pruned model and counts in the worst case
    column = ctx.outcome.columns[ctx.probe_labels["S9"]]
    assert column.broken.sum() == result.value and ctx.outcome.broken[column.broken].all()
    skipped, _ = outcome_check("S9", masked, data, battery(PGD))
    assert skipped.status == "skip" and "--parent" in skipped.message


@pytest.mark.parametrize(("check_id", "status"), [("S11", "warn"), ("S12", "fail"), ("S14", "warn")])
def test_probe_checks_fire_after_a_battery_too_weak_to_converge(check_id, status, mlp, data):
    result, _ = outcome_check(check_id, mlp, data, battery(WEAK_PGD))
    assert result.status == status, result.message
    assert result.how_to_fix


def test_s10_fires_when_random_noise_beats_gradients_a_quantizer_zeroes(mlp, data):
    result, ctx = outcome_check("S10", nn.Sequential(Quantize(2), mlp), data, battery(PGD, eps=0.15))
    assert result.status == "warn" and result.value >= 1
    assert ctx.outcome.columns[ctx.probe_labels["S10"]].broken.sum() == result.value
    assert outcome_check("S10", mlp, data, battery(PGD, eps=0.15))[0].status == "pass"


@pytest.mark.parametrize(
    ("build", "status"), [(lambda m: nn.Sequential(Quantize(2), m), "fail"), (lambda m: Scaled(m, 1e4), "fail")]
)
def test_s13_fires_when_an_unbounded_attack_cannot_reach_chance(build, status, mlp, data):
    result, _ = outcome_check("S13", build(mlp), data, battery(PGD))
    assert result.status == status and result.value > 0.5


def test_s20_fires_when_the_attack_misses_a_planted_adversarial_example(mlp, data):
    result, _ = outcome_check("S20", nn.Sequential(Quantize(2), mlp), data, battery(PGD))
    assert result.status == "fail" and result.value < 0.5


def test_s17_fires_when_only_targeted_attacks_break_a_saturated_model(mlp, data):
    result, _ = outcome_check("S17", Scaled(mlp, 1e4), data, battery(PGD, APGD_T))
    assert result.status == "warn"


def test_s19_fires_when_the_recorded_accuracy_is_far_from_the_measured_one(mlp, data):
    result, ctx = outcome_check("S19", mlp, data, battery(PGD), reference_acc=0.3)
    assert result.status == "fail" and "30.00 %" in result.message
    measured = float(ctx.outcome.clean.correct.mean())
    again, _ = outcome_check("S19", mlp, data, battery(PGD), reference_acc=measured)
    assert again.status == "pass"


def test_s19_does_not_compare_a_randomized_models_strict_accuracy_with_a_one_pass_record(mlp, data):
    result, _ = outcome_check("S19", Noisy(mlp, 0.1), data, battery(PGD), reference_acc=0.99)
    assert result.status == "skip" and "randomized" in result.message


def test_s18_fires_when_a_returned_adversarial_example_no_longer_fools_the_model(mlp, data):
    check = HEALTH_CHECKS.get("S18")
    result, ctx = outcome_check("S18", mlp, data, battery(PGD))
    assert result.status == "pass"
    broken = np.flatnonzero(ctx.outcome.broken & ctx.outcome.clean.correct)
    assert len(broken) > 0
    ctx.outcome.worst_x[broken[0]] = ctx.x[broken[0]]  # a fabricated outcome: the clean input, counted broken
    tampered = check.evaluate(ctx)
    assert tampered.status == "fail" and tampered.value == 1


def test_s21_fails_when_a_mask_is_not_applied_in_the_forward_pass(mlp, data):
    result, _ = outcome_check("S21", unapplied_mask(mlp), data, battery(PGD))
    assert result.status == "fail" and "not applied" in result.message
    assert outcome_check("S21", pruned(mlp, 0.5), data, battery(PGD))[0].status == "pass"


def test_s21_warns_when_pruning_masks_gradients_its_parent_had(mlp, data):
    result, _ = outcome_check("S21", Scaled(pruned(mlp, 0.8), 1e4), data, battery(PGD), parent=mlp)
    assert result.status == "warn" and "parent" in result.message


class Forgetful(Attack):
    """PGD that finds adversarial iterates and then returns the clean input: the best-so-far bug S15 catches."""

    defaults = {"steps": 20}
    implementation = "test: PGD that forgets what it found"

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        _, trace = pgd(
            cross_entropy_objective(model, y),
            x,
            norm=self.threat.norm,
            eps=self.threat.eps,
            alpha=self.threat.eps / 4,
            steps=int(self.settings["steps"]),
            random_start=False,
            generator=torch.Generator().manual_seed(seed),
        )
        self.record_trace(trace)
        return x.clone()


@pytest.fixture
def forgetful(monkeypatch):
    Forgetful.name = "forgetful"
    monkeypatch.setitem(ATTACKS._items, "forgetful", Forgetful)
    return AttackSpec(name="forgetful")


def test_s15_fires_when_an_attack_loses_the_adversarial_example_it_found(forgetful, mlp, data):
    result, ctx = outcome_check("S15", mlp, data, battery(forgetful))
    assert result.status == "fail" and result.value > 0
    assert (ctx.outcome.broken & ctx.outcome.clean.correct).sum() == 0  # only what was returned counts


def test_s15_passes_for_robustprunes_own_traced_attacks(mlp, data):
    traced = AttackSpec(name="probe_pgd", params={"steps": 20})
    result, _ = outcome_check("S15", mlp, data, battery(traced))
    assert result.status == "pass"
