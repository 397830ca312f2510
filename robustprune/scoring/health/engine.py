"""Running the checks: the model stage before the battery, the outcome stage (with its probes) after it."""

from __future__ import annotations

from robustprune.attacks.base import ATTACKS
from robustprune.config import AttackSpec
from robustprune.scoring.health.base import Check, HealthContext, ordered_checks
from robustprune.scoring.health.records import CheckResult


def check_model(ctx: HealthContext) -> dict[str, CheckResult]:
    """Every model check, in id order; what they find (randomized, no gradient) is set on the context."""
    results: dict[str, CheckResult] = {}
    for check in ordered_checks("model"):
        results[check.id] = check.evaluate(ctx)
        # Later model checks read what earlier ones found (S7 is moot without a graph, S16 on a randomized model).
        if check.id == "S2":
            ctx.randomized = ctx.randomized or results["S2"].status == "warn"
        if check.id == "S6":
            ctx.gradients = results["S6"].status != "fail"
    ctx.model_results = results
    return results


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
    for check in checks:
        run_probe(ctx, check)
    return {check.id: evaluate(ctx, check) for check in checks}
