"""The written verdict rule, case by case."""

from __future__ import annotations

import pytest

from robustprune.scoring.health import CheckResult, EscalationRecord
from robustprune.scoring.verdict import RULE, derive_verdict, worse


def check(check_id: str, status: str, resolved_by: str | None = None) -> CheckResult:
    return CheckResult(
        id=check_id,
        name=f"check {check_id}",
        status=status,
        value=None,
        threshold="t",
        message=f"{check_id} said {status}",
        how_to_fix="fix",
        resolved_by=resolved_by,
    )


def escalation(name: str, broken: int) -> EscalationRecord:
    return EscalationRecord(
        name=name, label=f"escalation:{name}", attack="x", settings={}, triggered_by=["S7"], reason="r", n_broken=broken
    )


def test_all_passing_or_skipped_checks_are_trusted():
    verdict, reasons = derive_verdict([check("S1", "pass"), check("S9", "skip")], [])
    assert (verdict, reasons) == ("trusted", [])


def test_a_warning_is_caution_and_says_which_check():
    verdict, reasons = derive_verdict([check("S1", "pass"), check("S2", "warn")], [])
    assert verdict == "caution" and reasons == ["S2 (check S2) WARNED: S2 said warn"]


def test_an_unresolved_failure_is_untrusted_and_listed_first():
    verdict, reasons = derive_verdict([check("S2", "warn"), check("S13", "fail")], [])
    assert verdict == "untrusted"
    assert reasons[0].startswith("S13") and reasons[1].startswith("S2")


def test_a_failure_an_escalation_resolved_is_caution():
    verdict, reasons = derive_verdict([check("S13", "fail", resolved_by="bpda")], [])
    assert verdict == "caution" and "bpda" in reasons[0]


def test_a_cut_graph_is_untrusted_even_though_gradient_free_attacks_ran():
    verdict, reasons = derive_verdict([check("S6", "fail")], [escalation("more_queries", 3)])
    assert verdict == "untrusted" and "upper bound" in reasons[0]


def test_a_cut_graph_bridged_by_bpda_is_caution():
    """S6 is resolved only under a view whose active tests pass (scoring/escalation.py): then the gradient attacks
    did run, through the straight-through cut, and the number is the battery's plus what BPDA found."""
    verdict, reasons = derive_verdict([check("S6", "fail", resolved_by="bpda")], [escalation("bpda", 3)])
    assert verdict == "caution" and "bpda" in reasons[0]


@pytest.mark.parametrize(("check_id", "verdict"), [("S20", "untrusted"), ("S6", "untrusted"), ("S19", "caution")])
def test_a_check_that_could_not_run_is_caution_or_untrusted_when_it_guards_against_masking(check_id, verdict):
    found, reasons = derive_verdict([check(check_id, "error")], [])
    assert found == verdict and "could not run" in reasons[0].lower()


def test_an_escalation_that_broke_examples_makes_an_otherwise_clean_run_caution():
    assert derive_verdict([check("S1", "pass")], [escalation("transfer", 0)])[0] == "trusted"
    verdict, reasons = derive_verdict([check("S1", "pass")], [escalation("transfer", 2)])
    assert verdict == "caution" and "transfer 2" in reasons[0]


@pytest.mark.parametrize(
    ("before", "after", "is_worse"),
    [
        ("trusted", "caution", True),
        ("caution", "untrusted", True),
        ("trusted", "untrusted", True),
        ("caution", "trusted", False),
        ("untrusted", "untrusted", False),
        (None, "untrusted", False),
        ("trusted", None, False),
    ],
)
def test_worse_orders_the_verdicts(before, after, is_worse):
    assert worse(before, after) is is_worse


def test_the_rule_names_every_verdict():
    assert all(word in RULE for word in ("trusted", "caution", "untrusted", "S6"))
