"""The battery engine: per-sample worst case on unbroken examples, verification, seeding, counting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustprune.attacks import load_battery, run_battery
from robustprune.attacks.base import Attack, register_attack
from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.errors import UsageError, VerificationError


@register_attack("test_outside_ball")
class OutsideBall(Attack):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return (x + 2 * self.threat.eps).clamp(0, 1) if self.threat.eps else x + 0.5


@register_attack("test_nan")
class ReturnsNaN(Attack):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        out = x.clone()
        out[0, 0, 0, 0] = float("nan")
        return out


@register_attack("test_outside_box")
class OutsideBox(Attack):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return x - 1e-3  # tiny, inside the ball, but below 0 where x == 0


def battery_of(*names: str, norm: str = "Linf", eps: float = 0.1, **params) -> BatterySpec:
    attacks = tuple(AttackSpec(name=n, params=params) for n in names)
    return BatterySpec(name="t", threat=ThreatModel(norm=norm, eps=eps), attacks=attacks)


def test_worst_case_over_unbroken_examples(trained_mlp, digits_test):
    data = digits_test.subset(120)
    out = run_battery(trained_mlp, data.x, data.y, load_battery("quick", eps=0.1), num_classes=10, seed=0)
    clean_wrong = ~out.clean.correct
    fgsm, pgd = out.columns["fgsm"], out.columns["pgd"]
    # Each attack runs exactly on the examples nothing has broken yet.
    assert np.array_equal(fgsm.attempted, ~clean_wrong)
    assert np.array_equal(pgd.attempted, ~clean_wrong & ~fgsm.broken)
    assert np.array_equal(out.broken, clean_wrong | fgsm.broken | pgd.broken)
    assert not (fgsm.broken & ~fgsm.attempted).any()
    assert out.records[0].n_broken == int(fgsm.broken.sum()) > 0
    # robust <= clean, and the attack really did something on an undefended model.
    assert (~out.broken).sum() < out.clean.correct.sum()
    attempted = pgd.attempted
    assert np.all(pgd.norm[attempted] <= 0.1 + 1e-6) and np.all(np.isnan(pgd.norm[~attempted]))


def test_adversarial_predictions_come_from_a_fresh_forward_pass(trained_mlp, digits_test):
    data = digits_test.subset(60)
    out = run_battery(trained_mlp, data.x, data.y, load_battery("quick", eps=0.1), num_classes=10, seed=0)
    cols = out.columns["fgsm"]
    labels = data.y.numpy()
    broken = cols.broken
    assert np.all(cols.adv_pred[broken] != labels[broken])
    assert np.all(cols.adv_pred[cols.attempted & ~broken] == labels[cols.attempted & ~broken])


def test_eps_zero_gives_clean_accuracy(trained_mlp, digits_test):
    data = digits_test.subset(100)
    out = run_battery(trained_mlp, data.x, data.y, load_battery("quick", eps=0.0), num_classes=10, seed=0)
    assert np.array_equal(out.broken, ~out.clean.correct)


def test_same_seed_same_per_sample_results(trained_mlp, digits_test):
    data = digits_test.subset(80)
    battery = load_battery("quick", eps=0.08)
    a = run_battery(trained_mlp, data.x, data.y, battery, num_classes=10, seed=3)
    b = run_battery(trained_mlp, data.x, data.y, battery, num_classes=10, seed=3)
    for label in a.columns:
        assert np.array_equal(a.columns[label].broken, b.columns[label].broken)
        assert np.array_equal(a.columns[label].adv_conf, b.columns[label].adv_conf, equal_nan=True)
    assert np.array_equal(a.worst_probs, b.worst_probs)


def test_passes_are_counted_per_attack(trained_mlp, digits_test):
    data = digits_test.subset(50)
    battery = battery_of("pgd", steps=7)
    out = run_battery(trained_mlp, data.x, data.y, battery, num_classes=10, seed=0)
    record = out.records[0]
    assert record.n_backward == 7 * record.n_attempted
    assert record.n_forward == 7 * record.n_attempted
    assert record.seconds > 0


@pytest.mark.parametrize(
    "name,what",
    [("test_outside_ball", "perturbation"), ("test_nan", "non-finite"), ("test_outside_box", r"outside \[0,1\]")],
)
def test_failed_verification_is_an_error_naming_the_attack(trained_mlp, digits_test, name, what):
    data = digits_test.subset(20)
    with pytest.raises(VerificationError, match=f"attack '{name}'.*{what}"):
        run_battery(trained_mlp, data.x, data.y, battery_of(name), num_classes=10, seed=0)


def test_model_state_restored_after_battery(trained_mlp, digits_test):
    trained_mlp.train()
    before = {k: v.clone() for k, v in trained_mlp.state_dict().items()}
    data = digits_test.subset(20)
    run_battery(trained_mlp, data.x, data.y, battery_of("pgd", steps=2), num_classes=10, seed=0)
    assert trained_mlp.training
    assert all(p.requires_grad for p in trained_mlp.parameters())
    assert all(torch.equal(before[k], v) for k, v in trained_mlp.state_dict().items())


def test_unsupported_norm_is_bad_input():
    with pytest.raises(UsageError, match="does not support the L2 norm"):
        run_battery(
            torch.nn.Flatten(),
            torch.zeros(1, 1, 2, 2),
            torch.zeros(1, dtype=torch.long),
            battery_of("fgsm", norm="L2", eps=0.5),
            num_classes=10,
        )


def test_unknown_attack_setting_is_bad_input():
    with pytest.raises(UsageError, match="unknown setting 'stepz'.*allowed settings are"):
        run_battery(
            torch.nn.Flatten(),
            torch.zeros(1, 1, 2, 2),
            torch.zeros(1, dtype=torch.long),
            battery_of("pgd", stepz=3),
            num_classes=10,
        )


def test_wrong_setting_type_is_bad_input():
    with pytest.raises(UsageError, match="steps' must be an integer"):
        run_battery(
            torch.nn.Flatten(),
            torch.zeros(1, 1, 2, 2),
            torch.zeros(1, dtype=torch.long),
            battery_of("pgd", steps="ten"),
            num_classes=10,
        )
