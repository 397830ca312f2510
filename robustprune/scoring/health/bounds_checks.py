"""Checks of the bracket (S24-S26): the certified and exact bounds judged against the attacks. They read the
bounds stage's report (ctx.cache["bounds"]); without one they are skipped and say why."""

from __future__ import annotations

from robustprune.scoring.health.base import Check, CheckResult, HealthContext, register_check

EXACT_RESOLUTION = "exact search"  # resolved_by of S25: the MILP's breaks are counted, the number is the exact one


def _report(check: Check, ctx: HealthContext) -> tuple[object | None, CheckResult | None]:
    report = ctx.cache.get("bounds")
    if report is None or report.method == "none":
        why = getattr(report, "skipped", None) or getattr(report, "error", None) or "no bounds were computed"
        return None, check.skip(why)
    return report, None


@register_check("S24")
class BoundsAgreeWithAttacks(Check):
    name = "no example is both proven robust and broken"
    stage = "bounds"
    threshold = "any example certified (CROWN) or proved (MILP) that a verified attack broke: fail"
    how_to_fix = (
        "a proof and a verified adversarial example cannot both be right: check the model for behaviour the walk "
        "cannot see (state, precision), and report it with the example's index"
    )

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        report, skipped = _report(self, ctx)
        if skipped:
            return skipped
        if report.contradictions:
            shown = ", ".join(str(i) for i in report.contradictions[:5])
            return self.result(
                "fail",
                len(report.contradictions),
                f"{len(report.contradictions)} examples are proven robust AND broken by a verified attack "
                f"(examples {shown}): one of the two is wrong, so neither number stands",
            )
        return self.result("pass", 0, "no proven example was broken by any attack")


@register_check("S25")
class ExactFindsNothingMissed(Check):
    name = "the attacks miss nothing the exact search breaks"
    stage = "bounds"
    threshold = "any example the MILP broke that every attack had left: fail (resolved: its break is counted)"
    how_to_fix = (
        "the battery is too weak for this model: the robust accuracy already counts the exact search's breaks; "
        "strengthen the battery (more steps, restarts, targeted attacks) before scoring models without --certify exact"
    )

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        report, skipped = _report(self, ctx)
        if skipped:
            return skipped
        if report.method != "exact":
            return self.skip("no exact search ran (--certify exact)")
        if report.exact_breaks:
            result = self.result(
                "fail",
                len(report.exact_breaks),
                f"the exact search broke {len(report.exact_breaks)} examples every attack had left (verified and "
                "counted in the robust accuracy)",
            )
            result.resolved_by = EXACT_RESOLUTION
            return result
        return self.result("pass", 0, "the exact search broke nothing the attacks had left")


@register_check("S26")
class BracketWidth(Check):
    name = "the bracket between certified and attacked robust accuracy is within --max-gap"
    stage = "bounds"
    threshold = "robust_acc - certified_acc > --max-gap points: warn (no --max-gap: reported only)"
    how_to_fix = (
        "the truth lies somewhere in the bracket: run --certify exact (with a larger --exact-budget) to close it, "
        "or prune further (fewer unstable ReLUs make the exact search affordable)"
    )

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        report, skipped = _report(self, ctx)
        if skipped:
            return skipped
        gap = float(report.gap_points or 0.0)
        limit = report.limits.get("max_gap")
        text = f"the bracket is {gap:.1f} points wide ({report.certified_acc:.1f} % to {report.robust_acc:.1f} %)"
        if limit is not None and gap > float(limit):
            return self.result("warn", round(gap, 6), f"{text}, above --max-gap {float(limit):g}")
        suffix = f", within --max-gap {float(limit):g}" if limit is not None else " (no --max-gap set)"
        return self.result("pass", round(gap, 6), text + suffix)
