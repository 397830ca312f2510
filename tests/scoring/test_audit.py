"""The audit: the reference attack on a seeded sample of the battery's survivors, its union with the battery, the
Clopper-Pearson bound on the gap, the growth on a miss, and the verdict it sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from robustprune.attacks import load_battery
from robustprune.attacks.base import Attack, register_attack
from robustprune.config import AttackSpec, AuditSpec, BatterySpec, ThreatModel
from robustprune.config.battery import read_battery
from robustprune.errors import UsageError
from robustprune.scoring import score
from robustprune.scoring.audit import audit_battery, clopper_pearson
from robustprune.scoring.escalation import EscalationBudget


@register_attack("test_audit_identity")
class Identity(Attack):
    """Returns the clean input: an audit attack that can break nothing."""

    uses_gradients = False

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return x.clone()


BUDGET = EscalationBudget(square_queries=100, steps=10, restarts=1)
THREAT = ThreatModel(norm="Linf", eps=0.1)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 50), (1, 2), (7, 7), (0, 1)])
def test_clopper_pearson_matches_the_beta_quantiles(k, n):
    low, high = clopper_pearson(k, n)
    expected_low = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    expected_high = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    assert low == pytest.approx(expected_low, abs=1e-9)
    assert high == pytest.approx(expected_high, abs=1e-9)


def weak_battery(audit: AuditSpec) -> BatterySpec:
    """One random point per example: it leaves survivors a real attack breaks (a cheap audit attack here)."""
    return BatterySpec(
        name="weak", threat=THREAT, attacks=(AttackSpec(name="uniform_noise", params={"draws": 1}),), audit=audit
    )


def test_an_example_broken_only_by_the_audit_counts_as_broken(trained_mlp, digits_test):
    audit = AuditSpec(attack="fast_apgd", fraction=0.2, min_size=2, grow=3, max_rounds=2, params={"steps": 20})
    data = digits_test.subset(60)
    result = score(trained_mlp, data, weak_battery(audit), seed=0, escalation_budget=BUDGET)
    report = result.audit
    assert report is not None and report.n_broken > 0
    broken = result.per_sample.broken
    assert broken[report.broken_index].all()
    assert set(report.broken_index) <= set(report.sample_index) and len(report.sample_index) == report.n_audited
    # the sample is drawn from the battery's survivors only
    battery_broken = ~result.per_sample.clean_correct
    for a in result.attacks:
        if a.role == "battery":
            battery_broken |= result.per_sample.attacks[a.label].broken
    assert not battery_broken[report.sample_index].any()
    # the union: the robust accuracy counts the audit's breaks, the battery's own number does not
    assert result.robust_acc <= 100.0 * (1 - broken.mean()) + 1e-9
    assert result.health.battery_robust_acc > result.robust_acc
    # a miss grows the sample: round 1 takes ceil(0.2 S), round 2 three times as many
    first = max(2, math.ceil(0.2 * report.n_survivors))
    assert report.rounds == 2 and report.n_audited == min(report.n_survivors, math.ceil(3 * first))
    # the verdict turns to caution (at least) and says why
    assert result.verdict in ("caution", "untrusted")
    assert any("audit" in r for r in result.health.reasons)
    # the bound: the share of audited survivors broken, scaled to all survivors, in points
    share = report.n_survivors / result.n_examples
    assert report.gap_points == pytest.approx(100 * report.n_broken / report.n_audited * share)
    assert report.gap_upper_points == pytest.approx(100 * clopper_pearson(report.n_broken, report.n_audited)[1] * share)
    assert "audit" in [a.role for a in result.attacks]


def test_an_attack_labelled_audit_keeps_its_column(trained_mlp, digits_test):
    audit = AuditSpec(attack="test_audit_identity", fraction=0.5)
    battery = BatterySpec(name="b", threat=THREAT, attacks=(AttackSpec(name="fgsm", label="audit"),), audit=audit)
    result = score(trained_mlp, digits_test.subset(30), battery, seed=0, escalation_budget=BUDGET)
    labels = [(a.label, a.role) for a in result.attacks if a.role in ("battery", "audit")]
    assert labels == [("audit", "battery"), ("audit_1", "audit")]
    assert result.per_sample.attacks["audit"].broken.any()  # fgsm's own breaks are still there


def test_no_miss_keeps_one_round_and_the_verdict(trained_mlp, digits_test):
    audit = AuditSpec(attack="test_audit_identity", fraction=0.1, min_size=3)
    data = digits_test.subset(60)
    result = score(trained_mlp, data, weak_battery(audit), seed=0, escalation_budget=BUDGET)
    report = result.audit
    assert report.n_broken == 0 and report.rounds == 1
    assert report.n_audited == min(report.n_survivors, max(3, math.ceil(0.1 * report.n_survivors)))
    assert not any("audit" in r for r in result.health.reasons)
    assert report.gap_upper_points == pytest.approx(
        100 * (1 - 0.025 ** (1 / report.n_audited)) * report.n_survivors / result.n_examples
    )
    assert "audit" in result.audit.line() and "none" in result.audit.line()


def test_the_fast_battery_is_audited_by_the_reference():
    fast = load_battery("fast")
    assert fast.audit is not None and fast.audit.attack == "autoattack"
    # ten classes: AutoAttack's nine targets; fewer classes: every other class
    assert audit_battery(fast, 10).attacks[0].params["n_target_classes"] == 9
    assert audit_battery(fast, 5).attacks[0].params["n_target_classes"] == 4


@pytest.mark.parametrize(
    "table, message",
    [
        ("fraction = 0", "fraction"),
        ("fraction = 1.5", "fraction"),
        ("grow = 0.5", "grow"),
        ("min_size = 0", "min_size"),
        ("max_rounds = 0", "max_rounds"),
        ("attack = 3", "attack"),
    ],
)
def test_bad_audit_tables_are_refused(tmp_path, table, message):
    path = tmp_path / "b.toml"
    path.write_text(f'name = "b"\neps = 0.1\n[[attack]]\nname = "fgsm"\n[audit]\n{table}\n')
    with pytest.raises(UsageError, match=message):
        read_battery(str(path))


def test_an_unknown_audit_setting_is_refused_before_anything_runs(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text('name = "b"\neps = 0.1\n[[attack]]\nname = "fgsm"\n[audit]\nattack = "autoattack"\nstepz = 3\n')
    with pytest.raises(UsageError, match="stepz"):
        load_battery(str(path))


def test_the_audit_round_trips_with_the_battery():
    fast = load_battery("fast")
    assert BatterySpec.from_dict(fast.to_dict()) == fast
    assert np.isclose(fast.audit.fraction, 0.02)
