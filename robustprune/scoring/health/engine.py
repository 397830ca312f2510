"""Running the checks: the model stage before the battery, the outcome stage (with its probes) after it.

Each check runs isolated (robustprune.boundary.isolated): a check, or its probe, that raises is recorded with
status `error` and its one-line reason, and the score goes on; the verdict reads it (scoring/verdict.py). A model
check in error is read conservatively: S2 as randomized, S6 as no gradient."""

from __future__ import annotations

from collections.abc import Callable

from robustprune.attacks.base import ATTACKS
from robustprune.boundary import isolated
from robustprune.config import AttackSpec
from robustprune.scoring.health.base import Check, HealthContext, ordered_checks
from robustprune.scoring.health.records import CheckResult


def check_model(ctx: HealthContext) -> dict[str, CheckResult]:
    """Every model check, in id order; what they find (randomized, no gradient) is set on the context."""
    results: dict[str, CheckResult] = {}
    for check in ordered_checks("model"):
        results[check.id] = guarded(check, lambda check=check: check.evaluate(ctx))
        # Later model checks read what earlier ones found (S7 is moot without a graph, S16 on a randomized model).
        if check.id == "S2":
            ctx.randomized = ctx.randomized or results["S2"].status in ("warn", "error")
        if check.id == "S6":
            ctx.gradients = results["S6"].status not in ("fail", "error")
    ctx.model_results = results
    return results


def guarded(check: Check, evaluate: Callable[[], CheckResult], stage: str = "") -> CheckResult:
    """`evaluate()` isolated: its result, or the check in status `error` with the one-line reason."""
    with isolated(check.id, stage) as failed:
        result = evaluate()
    return check.result("error", None, failed.error or "failed") if failed else result


def probe_label(check_id: str, spec: AttackSpec) -> str:
    return f"{check_id}:{spec.label}"


def _no_ball(ctx: HealthContext, check: Check) -> bool:
    return check.needs_ball and ctx.battery.threat.eps == 0


def run_probe(ctx: HealthContext, check: Check) -> None:
    """Run the probe attack `check` asks for (if any) on the survivors, through the engine: what it breaks counts."""
    if not ctx.battery_labels:
        ctx.battery_labels = [r.label for r in ctx.outcome.records]
    wanted = None if _no_ball(ctx, check) else check.probe(ctx)
    if wanted is None:
        return
    spec, limit = wanted
    if not spec.applies_to(ctx.battery.threat.norm) or ctx.battery.threat.norm not in ATTACKS.get(spec.name).norms:
        return
    labelled = AttackSpec(name=spec.name, label=probe_label(check.id, spec), params=dict(spec.params))
    ctx.probe_labels[check.id] = labelled.label
    ctx.run_attack(labelled, role="probe", only=ctx.survivors(limit))


def evaluate(ctx: HealthContext, check: Check) -> CheckResult:
    return check.skip("eps is 0: there is no ball to attack in") if _no_ball(ctx, check) else check.evaluate(ctx)


def run_outcome_check(ctx: HealthContext, check: Check) -> CheckResult:
    """One outcome check on its own: its probe on the survivors, then its evaluation (for tests and debugging)."""
    run_probe(ctx, check)
    return evaluate(ctx, check)


def check_outcome(ctx: HealthContext) -> dict[str, CheckResult]:
    """Every probe the outcome checks ask for, in id order, on the battery's survivors; then every outcome check
    (each judges with all the probes run, so a break one probe found is not counted against another check)."""
    ctx.battery_labels = [r.label for r in ctx.outcome.records]
    checks = ordered_checks("outcome")
    probe_errors = {}
    for check in checks:
        with isolated(check.id, "probe") as failed:
            run_probe(ctx, check)
        if failed:  # judged without its probe, the check could pass for the wrong reason
            probe_errors[check.id] = check.result("error", None, f"its probe attack failed: {failed.error}")
    return {
        check.id: probe_errors.get(check.id) or guarded(check, lambda check=check: evaluate(ctx, check))
        for check in checks
    }
