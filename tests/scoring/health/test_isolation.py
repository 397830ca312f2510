"""No stage after the battery can end a score: each registered check forced to raise in turn, its probe forced to
raise, and the audit, eps curve, efficiency, multi-head report and sparsity forced to raise. Each ends in a result
whose record says what failed; the verdict reads it (a check guarding against masking in `error`: untrusted;
any other: at least caution)."""

from __future__ import annotations

import pytest

from robustprune.config import AttackSpec, AuditSpec, BatterySpec, ThreatModel
from robustprune.scoring import EscalationBudget, score
from robustprune.scoring import scorer as scorer_module
from robustprune.scoring.health import HEALTH_CHECKS
from robustprune.scoring.health.base import MASKING_GUARDS

THREAT = ThreatModel(norm="Linf", eps=0.1)
# a short Square of its own: a check forced into `error` on S6 would otherwise get AutoAttack's 5000-query one
BATTERY = BatterySpec(
    name="iso",
    threat=THREAT,
    attacks=(
        AttackSpec(name="pgd", params={"steps": 5}),
        AttackSpec(name="square", params={"n_queries": 50, "p_init": 0.8}),
    ),
)
BUDGET = EscalationBudget(square_queries=50, steps=5, restarts=1)


def forced(*args, **kwargs):
    raise RuntimeError("forced failure")


@pytest.mark.parametrize("check_id", HEALTH_CHECKS.names())
def test_each_check_that_raises_is_an_error_and_the_verdict_follows_the_rule(
    check_id, monkeypatch, trained_mlp, digits_test
):
    check = HEALTH_CHECKS.get(check_id)
    monkeypatch.setattr(type(check), "evaluate", forced)
    result = score(trained_mlp, digits_test.subset(12), BATTERY, seed=0, escalation_budget=BUDGET, efficiency=False)
    found = result.health.check(check_id)
    assert found.status == "error" and "raised RuntimeError('forced failure')" in found.message
    assert check_id in found.message  # the stage it failed in
    expected = "untrusted" if check_id in MASKING_GUARDS else ("caution", "untrusted")
    assert result.verdict in expected
    assert any("could not run" in reason.lower() and check_id in reason for reason in result.health.reasons)
    assert result.document["health"]["checks"]  # the document validates with the new status


def test_a_probe_that_raises_puts_its_check_in_error_instead_of_passing_it(monkeypatch, trained_mlp, digits_test):
    check = HEALTH_CHECKS.get("S8")
    monkeypatch.setattr(type(check), "probe", forced)
    battery = BatterySpec(name="pgd", threat=THREAT, attacks=(AttackSpec(name="pgd", params={"steps": 5}),))
    result = score(trained_mlp, digits_test.subset(12), battery, seed=0, escalation_budget=BUDGET, efficiency=False)
    s8 = result.health.check("S8")
    assert s8.status == "error" and "its probe attack failed" in s8.message
    assert result.verdict == "untrusted"  # S8 guards against masking


@pytest.mark.parametrize(
    ("target", "stage", "where"),
    [
        ("measure_efficiency", "efficiency", lambda r: r.efficiency.skipped),
        ("min_norm_curve", "eps curve", lambda r: r.eps_curve_skipped),
        ("sparsity_report", "sparsity", lambda r: next(w.message for w in r.warnings if w.check == "sparsity")),
    ],
)
def test_a_later_stage_that_raises_is_recorded_and_the_score_goes_on(
    target, stage, where, monkeypatch, trained_mlp, digits_test
):
    monkeypatch.setattr(scorer_module, target, forced)
    result = score(
        trained_mlp,
        digits_test.subset(12),
        BATTERY,
        seed=0,
        escalation_budget=BUDGET,
        efficiency=True,
        eps_grid=[0.0, 0.1],
    )
    assert "forced failure" in where(result)
    assert result.verdict is not None and result.robust_acc is not None
    if stage != "sparsity":
        assert any(e.check == stage and "forced failure" in e.message for e in result.stage_errors)


def test_an_audit_that_raises_makes_the_verdict_caution(monkeypatch, trained_mlp, digits_test):
    monkeypatch.setattr(scorer_module, "run_audit", forced)
    audited = BatterySpec(name="audited", threat=THREAT, attacks=BATTERY.attacks, audit=AuditSpec(attack="apgd"))
    result = score(trained_mlp, digits_test.subset(12), audited, seed=0, escalation_budget=BUDGET, efficiency=False)
    assert result.audit.error and "forced failure" in result.audit.error and result.audit.n_audited == 0
    assert result.verdict in ("caution", "untrusted")
    assert any("audit" in reason and "could not run" in reason for reason in result.health.reasons)
    assert "AUDIT FAILED" in result.audit.line()


def test_an_escalation_that_raises_is_recorded_and_resolves_nothing(monkeypatch, trained_mlp, digits_test):
    from pathologies import Rounded

    from robustprune.scoring import escalation

    monkeypatch.setattr(escalation.BPDA, "specs", forced)
    result = score(
        Rounded(trained_mlp).eval(), digits_test.subset(12), BATTERY, seed=0, escalation_budget=BUDGET, efficiency=False
    )
    bpda = next(e for e in result.health.escalations if e.name == "bpda")
    assert bpda.error and "forced failure" in bpda.error
    assert result.verdict == "untrusted"  # the masking it was to repair stays unrepaired
