"""The `fast` battery against the reference AutoAttack on a small panel, and its determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from broken_models import trained_bn_dropout_cnn

from robustprune.attacks import load_battery, run_battery
from robustprune.defenses.pipeline import train_model

N = 100


@pytest.fixture(scope="module")
def pgd_at_cnn():
    return train_model("pgd_at", epochs=4, seed=0)[0].model.eval()


@pytest.fixture(scope="module")
def bn_cnn(digits_train, digits_test):
    return trained_bn_dropout_cnn(digits_train, digits_test)


@pytest.fixture(scope="module")
def data(digits_test):
    return digits_test.subset(N)


@pytest.mark.parametrize("which", ["mlp", "pgd_at_cnn"])
def test_fast_breaks_what_autoattack_breaks(which, request, data):
    model = request.getfixturevalue("trained_mlp" if which == "mlp" else "pgd_at_cnn")
    fast = run_battery(model, data.x, data.y, load_battery("fast"), num_classes=10, seed=0)
    reference = run_battery(model, data.x, data.y, load_battery("autoattack", eps=0.1), num_classes=10, seed=0)
    robust = int((~reference.broken).sum())
    assert 0 < robust < int(reference.clean.correct.sum())  # the comparison can tell the two apart
    only_reference = reference.broken & ~fast.broken
    assert only_reference.sum() <= 1, np.flatnonzero(only_reference)
    # and at a fraction of the reference's passes
    cost = lambda out: sum(r.n_forward + r.n_backward for r in out.records)
    assert cost(fast) < 0.2 * cost(reference)


def test_fast_is_deterministic_under_a_seed(trained_mlp, data):
    runs = [run_battery(trained_mlp, data.x, data.y, load_battery("fast"), num_classes=10, seed=5) for _ in "ab"]
    assert np.array_equal(runs[0].broken, runs[1].broken)
    assert torch.equal(runs[0].worst_x, runs[1].worst_x)
    for a, b in zip(runs[0].records, runs[1].records):
        assert (a.n_broken, a.n_forward, a.n_backward) == (b.n_broken, b.n_forward, b.n_backward)


@pytest.fixture(scope="module")
def bn_reference(bn_cnn, data):
    """The reference AutoAttack on the BatchNorm CNN handed over in train mode (run once for both batteries)."""
    model = bn_cnn.train()
    reference = run_battery(model, data.x, data.y, load_battery("autoattack"), num_classes=10, seed=0)
    assert model.training  # handed back as it came
    return reference


@pytest.mark.parametrize("battery", ["standard", "fast"])
def test_no_battery_reports_more_than_the_reference_on_a_batchnorm_cnn(battery, bn_cnn, bn_reference, data):
    # Handed over in train mode, as the model that once leaked: torchattacks' ports restored the mode they saw
    # and re-classified on batch statistics, leaving 3 of 150 examples the reference broke.
    model = bn_cnn.train()
    ours = run_battery(model, data.x, data.y, load_battery(battery), num_classes=10, seed=0)
    assert model.training  # handed back as it came
    reference = bn_reference
    assert 0 < int((~reference.broken).sum()) < int(reference.clean.correct.sum())
    assert not (reference.broken & ~ours.broken).any(), np.flatnonzero(reference.broken & ~ours.broken)


def test_three_classes_run_fast_without_the_stages_that_need_more(digits_test):
    # the default battery must not refuse a 3-class problem: the stages that read the 4th logit step aside
    from robustprune.models import build_model
    from robustprune.scoring import EscalationBudget, score

    keep = digits_test.y < 3
    x, y = digits_test.x[keep][:30], digits_test.y[keep][:30]
    torch.manual_seed(0)
    model = build_model("mlp", 3, (1, 8, 8)).eval()
    result = score(model, (x, y), "fast", seed=0, escalation_budget=EscalationBudget(100, 10, 1))
    skipped = {a.label: a.skipped for a in result.attacks if a.skipped}
    assert "apgd-t3" in skipped and "odi-top-up" not in skipped
    assert result.audit is not None and "3 classes" in result.audit.skipped
    assert not [a for a in result.alerts if a.check == "S6"]  # a stage stepping aside is not a cut graph


def test_on_a_randomized_model_stages_step_aside_without_a_false_alert(trained_mlp, digits_test):
    from broken_models import Noisy

    from robustprune.scoring import EscalationBudget, score

    data = digits_test.subset(20)
    result = score(Noisy(trained_mlp, 0.1), data, "fast", seed=0, escalation_budget=EscalationBudget(100, 10, 1))
    assert result.randomized
    odi = next(a for a in result.attacks if a.label == "odi-top-up")
    assert odi.skipped and "randomized" in odi.skipped
    assert not [a for a in result.alerts if a.check == "S6"]
