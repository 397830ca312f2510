"""The bracket in a score: certified lower bounds and exact answers beside the attacks, judged against them (S24-S26),
recorded per example, and refused when a document's bracket does not hold together."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from robustprune.config import AttackSpec, BatterySpec, CertifySpec, ThreatModel
from robustprune.errors import UsageError
from robustprune.models import build_model
from robustprune.results.schema import InvalidDocument, validate_document
from robustprune.scoring import EscalationBudget, score
from robustprune.scoring import bounds as bounds_module
from robustprune.scoring.bounds import EXACT_LABEL

THREAT = ThreatModel(norm="Linf", eps=0.1)
WEAK = BatterySpec(name="one-fgsm", threat=THREAT, attacks=(AttackSpec(name="fgsm"),))
PGD = BatterySpec(name="pgd", threat=THREAT, attacks=(AttackSpec(name="pgd", params={"steps": 10}),))
BUDGET = EscalationBudget(square_queries=50, steps=5, restarts=1)
N = 40


@pytest.fixture(scope="module")
def pruned90(_trained_mlp_state):
    """The trained MLP 90 % pruned by global magnitude, its masks NOT folded into the weights."""
    model = build_model("mlp", 10, (1, 8, 8))
    model.load_state_dict(_trained_mlp_state)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.9)
    assert all(hasattr(m, "weight_orig") for m, _ in layers)
    return model.eval()


def _score(model, data, battery, certify, **kwargs):
    return score(
        model, data.subset(N), battery, seed=0, escalation_budget=BUDGET, efficiency=False, certify=certify, **kwargs
    )


@pytest.fixture(scope="module")
def weak_exact(pruned90, digits_test):
    return _score(pruned90, digits_test, WEAK, CertifySpec("exact", exact_time_limit=5.0, exact_budget=60.0))


def test_a_weak_battery_leaves_breaks_the_exact_search_finds_counts_and_flags(weak_exact):
    result = weak_exact
    bounds = result.bounds
    assert bounds.method == "exact" and bounds.exact_breaks, bounds
    status = result.per_sample.status
    column = result.per_sample.attacks[EXACT_LABEL]
    for i in bounds.exact_breaks:  # verified through the engine like any attack's break, and counted
        assert column.broken[i] and result.per_sample.broken[i] and status[i] == "broken"
    assert not result.per_sample.attacks["fgsm"].broken[bounds.exact_breaks].any()
    assert bounds.robust_acc == result.robust_acc
    assert 100.0 * np.isin(status, ("certified", "proved")).mean() == pytest.approx(bounds.certified_acc)
    assert bounds.certified_acc <= result.robust_acc
    if bounds.counts["unknown"] == 0:
        assert bounds.exact_acc == result.robust_acc and bounds.gap_points == 0
    s25 = result.health.check("S25")
    assert s25.status == "fail" and s25.resolved_by is not None and s25.value == len(bounds.exact_breaks)
    assert result.verdict == "caution"
    assert any("S25" in reason for reason in result.health.reasons)
    assert result.health.check("S24").status == "pass"
    validate_document(result.document)


def test_a_full_battery_and_the_exact_search_agree_on_what_they_both_decide(pruned90, digits_test):
    result = _score(pruned90, digits_test, PGD, CertifySpec("exact", exact_time_limit=2.0, exact_budget=8.0))
    status = result.per_sample.status
    # nothing is both proven and broken, and whatever the MILP decided is consistent with PGD's breaks
    assert not result.bounds.contradictions
    assert set(status[result.per_sample.broken & result.per_sample.clean_correct]) <= {"broken"}
    assert result.bounds.certified_acc <= result.robust_acc
    assert set(status) <= {"wrong", "broken", "certified", "proved", "unknown"}


def test_auto_certifies_a_supported_mlp_with_crown_and_the_report_shows_the_bracket(trained_mlp, digits_test, tmp_path):
    from robustprune.results.io import save_result

    result = _score(trained_mlp, digits_test, PGD, "auto")
    bounds = result.bounds
    assert bounds.method == "crown" and bounds.requested == "auto" and bounds.solver is None
    assert bounds.certified_acc <= result.robust_acc
    assert bounds.walk_gap < 1e-4
    assert result.per_sample.status is not None and len(result.per_sample.status) == N
    save_result(result, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "Certified and exact bounds" in text and "certified robust accuracy (lower bound)" in text
    from robustprune.render import summary_table

    first = summary_table(result).splitlines()[0]
    assert first.startswith(f"robust {result.robust_acc:.1f} % (upper); certified >= {bounds.certified_acc:.1f} %")


def test_a_planted_wrong_certificate_fails_the_evaluation(pruned90, digits_test, monkeypatch):
    real = bounds_module.certify_examples

    def certify_everything(*args, **kwargs):
        run = real(*args, **kwargs)
        run.certified[:] = True  # a verifier bug: every example "certified", broken ones included
        return run

    monkeypatch.setattr(bounds_module, "certify_examples", certify_everything)
    result = _score(pruned90, digits_test, PGD, "crown")
    s24 = result.health.check("S24")
    assert s24.status == "fail" and s24.value == len(result.bounds.contradictions) > 0
    assert result.verdict == "untrusted"
    assert result.bounds.exact_acc is None
    broken = np.flatnonzero(result.per_sample.broken & result.per_sample.clean_correct)
    assert set(result.bounds.contradictions) == set(broken.tolist())


def test_a_counterexample_that_does_not_fool_the_model_leaves_its_example_unknown(pruned90, digits_test, monkeypatch):
    real = bounds_module.certify_examples
    planted = {}

    def fake_counterexamples(network, x, y, **kwargs):
        run = real(network, x, y, **kwargs)
        search = kwargs["search"]
        for i in np.flatnonzero(search & ~run.certified)[:3]:
            run.proved[i] = False
            run.counterexamples[int(i)] = x[i].double().cpu().clone()  # the clean input: correctly classified
            planted[int(i)] = True
        return run

    monkeypatch.setattr(bounds_module, "certify_examples", fake_counterexamples)
    result = _score(pruned90, digits_test, WEAK, CertifySpec("exact", exact_time_limit=0.5, exact_budget=5.0))
    assert planted, "the weak battery left survivors CROWN did not certify"
    assert sorted(result.bounds.rejected) == sorted(planted)
    reasons = {u.index: u.reason for u in result.bounds.unknown_examples}
    for i in planted:
        assert result.per_sample.status[i] == "unknown" and not result.per_sample.broken[i]
        assert "did not fool the model" in reasons[i]
    assert sorted(reasons) == sorted(np.flatnonzero(result.per_sample.status == "unknown").tolist())
    assert result.bounds.exact_acc is None


class SigmoidNet(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base, self.squash = base, nn.Sigmoid()

    def forward(self, x):
        return self.squash(self.base(x)) * 10


def test_an_unsupported_model_gets_one_reason_and_the_score_completes(trained_mlp, digits_test):
    result = _score(SigmoidNet(copy.deepcopy(trained_mlp)), digits_test, PGD, "crown")
    assert result.bounds.method == "none" and "Sigmoid" in result.bounds.skipped
    assert "\n" not in result.bounds.skipped
    assert result.health.check("S24").status == "skip"
    assert result.per_sample.status is None  # nothing was bounded: no statuses to compare
    validate_document(result.document)


def test_certify_none_computes_nothing_and_bad_settings_are_usage_errors(trained_mlp, digits_test):
    result = _score(trained_mlp, digits_test, PGD, "none")
    assert result.bounds is None and result.per_sample.status is None
    with pytest.raises(UsageError, match="certify"):
        CertifySpec("bogus")
    with pytest.raises(UsageError, match="exact-time-limit"):
        CertifySpec("exact", exact_time_limit=-1)
    with pytest.raises(UsageError, match="no setting"):
        CertifySpec.coerce({"method": "crown", "budget": 3})


def test_a_randomized_model_is_not_certified(trained_mlp, digits_test):
    class Noisy(nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base = base

        def forward(self, x):
            return self.base(x + 0.05 * torch.randn_like(x))

    result = _score(Noisy(copy.deepcopy(trained_mlp)), digits_test, PGD, "crown")
    assert result.bounds.method == "none" and "randomized" in result.bounds.skipped


def test_a_document_whose_bracket_does_not_hold_is_refused(weak_exact):
    doc = weak_exact.document
    doc["bounds"]["certified_acc"] = doc["robust_acc"] + 10
    with pytest.raises(InvalidDocument, match="certified_acc"):
        validate_document(doc)
    doc = weak_exact.document
    doc["per_sample"]["status"] = ["certified"] * len(doc["per_sample"]["status"])
    with pytest.raises(InvalidDocument, match="status"):
        validate_document(doc)


def test_check_compares_the_certified_accuracy_paired(weak_exact):
    from robustprune.check.compare import CERTIFIED, compare_results
    from robustprune.scoring.result import ScoreResult

    worse = ScoreResult.from_json(weak_exact.document)
    proven = np.flatnonzero(np.isin(worse.per_sample.status, ("certified", "proved")))
    assert len(proven) >= 8
    worse.per_sample.status[proven] = "unknown"
    rows = {r.metric: r for r in compare_results(weak_exact, worse)}
    assert rows[CERTIFIED].status == "FAIL" and rows[CERTIFIED].delta < 0
    same = {r.metric: r for r in compare_results(weak_exact, weak_exact)}
    assert same[CERTIFIED].status == "PASS"


def test_the_eps_curve_gets_its_lower_curve_where_bounds_ran(trained_mlp, digits_test):
    result = score(
        trained_mlp, digits_test.subset(20), PGD, seed=0, escalation_budget=BUDGET, efficiency=False,
        eps_grid=[0.0, 0.05, 0.1, 0.2], certify="crown",
    )  # fmt: skip
    curve = result.eps_curve
    assert curve.certified_acc is not None and len(curve.certified_acc) == 4
    # a lower bound: never above the attacked curve, never rising with eps; at the battery's eps it is the bracket's
    assert all(lo <= hi + 1e-9 for lo, hi in zip(curve.certified_acc, curve.robust_acc))
    assert all(b <= a + 1e-9 for a, b in zip(curve.certified_acc, curve.certified_acc[1:]))
    assert curve.certified_acc[2] == pytest.approx(result.bounds.certified_acc)
    assert curve.certified_acc[0] == pytest.approx(result.clean_acc)  # eps 0: every correct example is certified
    validate_document(result.document)


def test_a_sweep_file_takes_certify_and_keys_its_cells_by_it():
    from robustprune.config import SweepSpec, sweep_spec_from_dict

    spec = SweepSpec(recipes=("dense",), certify="exact")
    assert spec.certify == CertifySpec("exact").to_dict()
    assert sweep_spec_from_dict(spec.to_dict()) == spec  # stored in sweep.json and read back unchanged
    assert "certify" not in SweepSpec(recipes=("dense",)).to_dict()  # older sweep files keep their keys
    with pytest.raises(UsageError, match="not a method"):
        SweepSpec(recipes=("dense",), certify="milp")
    with pytest.raises(UsageError, match="exact-budget"):
        SweepSpec(recipes=("dense",), certify={"method": "exact", "exact_budget": -1})
