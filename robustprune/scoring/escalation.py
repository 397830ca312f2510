"""Escalation: when a health check says the gradient attacks may have failed, attack harder, on its own.

Each escalation is one registered class: the checks that trigger it, the attack it runs on what is still
unbroken (through the engine, so whatever it breaks is verified and counts in the worst case), and, where it
changes how the model is attacked (BPDA, rescaled logits), a view of the model under which the checks that
failed (S13 unbounded attack, S20 binarization) are run again: a fail that passes under the escalation is
resolved. A failed S6 or S23 (the forward pass cuts the gradient) is resolved by a view only when the active
tests (S13, S20) also pass under it: a gradient that exists is not yet a gradient that finds adversarial examples.
Two escalations act before the battery, as attacks `score` adds to it (scoring/additions.py): EOT for a
randomized model (S2) and a gradient-free attack for a model without a gradient (S6); they are recorded here too.
Every escalation and re-check runs isolated: one that raises is recorded with its error and resolves nothing.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from robustprune.attacks.base import ATTACKS
from robustprune.attacks.bpda import bpda_view
from robustprune.attacks.rescaled import Rescaled, choose_rescaling
from robustprune.boundary import isolated
from robustprune.config import AttackSpec
from robustprune.registry import Registry
from robustprune.scoring.health import HEALTH_CHECKS, CheckResult, EscalationRecord, HealthContext

ModelView = Callable[[nn.Module], Any]  # model -> context manager yielding the model to attack
MASKING = ("S7", "S8", "S9", "S10", "S13", "S16", "S20", "S21", "S23")  # checks that point at hidden gradients
RECHECKED = ("S6", "S13", "S20", "S23")  # checks re-run under an escalation's view of the model
CUT = ("S6", "S23")  # the forward pass cuts the gradient: resolved only with the active tests passing too
ACTIVE_TESTS = ("S13", "S20")  # an attack must find what provably exists (evidence that a view repairs the attacks)
SQUARE_QUERIES = 10_000  # twice AutoAttack's Square budget


class Escalation(ABC):
    name: ClassVar[str]
    order: ClassVar[int]  # escalations run in this order: cheap, targeted fixes first, brute force last
    triggers: ClassVar[tuple[str, ...]]  # check ids whose warn or fail calls for this escalation
    why: ClassVar[str]  # what it does about them, for the result
    # A fallback runs only when the gradient attacks cannot be repaired: no gradient at all (S6), no escalation that
    # changes how the model is attacked applied, or a re-checked failure that none of them resolved.
    fallback: ClassVar[bool] = False

    def triggered_by(self, results: dict[str, CheckResult]) -> list[str]:
        return [i for i in self.triggers if i in results and results[i].status in ("warn", "fail")]

    def unavailable(self, ctx: HealthContext) -> str | None:
        """Why it cannot run on this model (None: it can)."""
        return None

    @abstractmethod
    def spec(self, ctx: HealthContext, budget: EscalationBudget) -> AttackSpec:
        """The attack to run on the survivors."""

    def specs(self, ctx: HealthContext, budget: EscalationBudget) -> list[AttackSpec]:
        """Every attack to run on the survivors, in order (the first is `spec`)."""
        return [self.spec(ctx, budget)]

    def view(self, ctx: HealthContext) -> ModelView | None:
        """How this escalation sees the model, for re-running the re-checked checks (None: it does not change it)."""
        return None

    def attack_view(self, ctx: HealthContext) -> ModelView | None:
        """How its attacks see the model, when they attack through a view of their own (BPDA)."""
        return None

    def describe(self, ctx: HealthContext) -> dict[str, Any]:
        """What its view of the model is made of, recorded beside its attack's settings."""
        return {}


@dataclass(frozen=True)
class EscalationBudget:
    """How hard the escalations attack. The defaults are what `score` uses; a smaller budget is for quick looks
    and tests, and is recorded with each escalation's settings."""

    square_queries: int = SQUARE_QUERIES
    steps: int = 100  # PGD steps of the gradient escalations (more_steps uses twice this)
    restarts: int = 2


ESCALATIONS: Registry[Escalation] = Registry("escalation")


def ordered_escalations() -> list[Escalation]:
    return sorted((ESCALATIONS.get(name) for name in ESCALATIONS.names()), key=lambda e: e.order)


def register_escalation(name: str) -> Callable[[type[Escalation]], type[Escalation]]:
    def decorator(cls: type[Escalation]) -> type[Escalation]:
        cls.name = name
        ESCALATIONS.add(name, cls())
        return cls

    return decorator


@register_escalation("logit_rescaling")
class LogitRescaling(Escalation):
    order = 10
    triggers = ("S1", "S22", "S17")
    why = (
        "outputs that are probabilities or saturated logits starve the cross-entropy gradient: APGD-CE on rescaled "
        "logits"
    )

    def unavailable(self, ctx: HealthContext) -> str | None:
        return None if ctx.gradients else "no gradient reaches the input (S6)"

    def spec(self, ctx: HealthContext, budget: EscalationBudget) -> AttackSpec:
        return AttackSpec(name="rescaled_apgd", params={"steps": budget.steps, "restarts": budget.restarts})

    def view(self, ctx: HealthContext) -> ModelView:
        mode, temperature = choose_rescaling(ctx.model, ctx.sample[0], "auto")
        return lambda model: nullcontext(Rescaled(model, mode, temperature))


@register_escalation("bpda")
class BPDA(Escalation):
    order = 20
    triggers = ("S6", "S7", "S13", "S16", "S20", "S23")
    why = (
        "layers and operations with a zero derivative, or that cut the graph, stop the gradient: APGD-CE with every "
        "one located straight-through (BPDA)"
    )

    def unavailable(self, ctx: HealthContext) -> str | None:
        if not ctx.gradients and not ctx.bridged:
            return "no gradient reaches the input (S6) and no straight-through version of the forward pass gives one"
        if not ctx.gradient_killers and not ctx.gradient_stops:
            return "no layer or operation was found that stops the gradient"
        return None

    def spec(self, ctx: HealthContext, budget: EscalationBudget) -> AttackSpec:
        return AttackSpec(name="apgd", params={"steps": budget.steps, "n_restarts": budget.restarts, "loss": "ce"})

    def specs(self, ctx: HealthContext, budget: EscalationBudget) -> list[AttackSpec]:
        """APGD-CE, then the battery's own gradient attacks again: the same battery, through the bridged graph."""
        again = [
            AttackSpec(name=a.name, label=a.label, params=dict(a.params))
            for a in ctx.battery.active_attacks()
            if a.label in ctx.battery_labels and ATTACKS.get(a.name).uses_gradients
        ]
        return [self.spec(ctx, budget), *again]

    def view(self, ctx: HealthContext) -> ModelView:
        names = list(ctx.gradient_killers)
        return lambda model: bpda_view(model, names, ops=True)

    def attack_view(self, ctx: HealthContext) -> ModelView:
        return self.view(ctx)

    def describe(self, ctx: HealthContext) -> dict[str, Any]:
        return {
            "modules": ",".join(ctx.gradient_killers),
            "ops": [stop.text() for stop in ctx.gradient_stops],
            "battery_again": [a.label for a in self.specs(ctx, EscalationBudget())[1:]],
        }


@register_escalation("transfer")
class Transfer(Escalation):
    order = 30
    triggers = MASKING
    why = "the gradients of the scored model may be masked: PGD crafted on the dense parent, with restarts"

    def unavailable(self, ctx: HealthContext) -> str | None:
        return None if ctx.parent is not None else "no parent model is known (pass --parent)"

    def spec(self, ctx: HealthContext, budget: EscalationBudget) -> AttackSpec:
        return AttackSpec(
            name="transfer_pgd", params={"steps": budget.steps, "rel_step": 0.025, "restarts": budget.restarts + 1}
        )


@register_escalation("more_steps")
class MoreSteps(Escalation):
    order = 40
    triggers = ("S11", "S12", "S14")
    why = "the gradient attacks had not converged: APGD with twice the steps and two restarts (EOT if randomized)"

    def unavailable(self, ctx: HealthContext) -> str | None:
        return None if ctx.gradients else "no gradient reaches the input (S6)"

    def spec(self, ctx: HealthContext, budget: EscalationBudget) -> AttackSpec:
        steps = 2 * budget.steps
        if ctx.randomized:
            return AttackSpec(
                name="adaptive_eot_pgd",
                params={"steps": steps, "rel_step": 0.025, "eot_iter": 20, "random_start": True},
            )
        return AttackSpec(name="apgd", params={"steps": steps, "n_restarts": budget.restarts, "loss": "ce"})


@register_escalation("more_queries")
class MoreQueries(Escalation):
    order = 50
    fallback = True
    # not S9 / S21 alone: transfer from the parent, which they call for, is their direct answer
    triggers = ("S6", *(c for c in MASKING if c not in ("S9", "S21")))
    why = (
        "gradients are missing or masked and no gradient escalation repaired them: Square with more queries than "
        f"AutoAttack's ({SQUARE_QUERIES} by default, twice its budget)"
    )

    def spec(self, ctx: HealthContext, budget: EscalationBudget) -> AttackSpec:
        return AttackSpec(name="square", params={"n_queries": budget.square_queries, "n_restarts": 1, "p_init": 0.8})


def before_battery(ctx: HealthContext, additions: list[dict[str, Any]]) -> list[EscalationRecord]:
    """Records for the attacks `score` added to the battery because of a model check (EOT for S2, a gradient-free
    attack for S6); their counts are filled in by `finish_records` once the battery ran."""
    triggers = {"adaptive_eot_pgd": ("eot", "S2"), "square": ("gradient_free", "S6")}
    records = []
    for addition in additions:
        if not addition.get("added") or addition["attack"] not in triggers:
            continue
        name, check = triggers[addition["attack"]]
        records.append(
            EscalationRecord(
                name=name,
                label=addition["label"],
                attack=addition["attack"],
                settings=dict(addition["settings"]),
                triggered_by=[check],
                reason=addition["reason"],
            )
        )
    return records


def escalate(
    ctx: HealthContext, results: dict[str, CheckResult], budget: EscalationBudget | None = None
) -> list[EscalationRecord]:
    """Run every escalation some check calls for on the survivors: first those that repair the gradient attacks,
    then re-run the failed checks under the escalations that change how the model is attacked, then the fallbacks
    if the gradient attacks are still not repaired. Updates `results` in place."""
    budget = budget or EscalationBudget()
    records: list[EscalationRecord] = []
    if ctx.battery.threat.eps == 0:  # nothing to attack inside a ball of radius 0
        return records
    views: list[tuple[str, ModelView]] = []
    rechecked = False
    for escalation in ordered_escalations():
        triggered = escalation.triggered_by(results)
        if not triggered:
            continue
        if escalation.fallback and not rechecked:
            _recheck(ctx, results, views)
            rechecked = True
        if escalation.fallback and not _still_needed(ctx, results, views):
            continue
        label = f"escalation:{escalation.name}"
        record = EscalationRecord(
            name=escalation.name, label=label, attack="", settings={}, triggered_by=triggered, reason=escalation.why
        )
        records.append(record)
        for check_id in triggered:
            results[check_id].escalations.append(escalation.name)
        started = time.perf_counter()
        view = None
        with isolated("escalation", escalation.name) as failed:
            record.skipped = escalation.unavailable(ctx)
            if record.skipped is None:
                _run_escalation(ctx, escalation, budget, record)
                view = None if record.skipped else escalation.view(ctx)
        record.seconds = time.perf_counter() - started
        if failed:
            record.error = failed.error
        elif view is not None:
            views.append((escalation.name, view))
    if not rechecked:
        _recheck(ctx, results, views)
    return records


def _run_escalation(
    ctx: HealthContext, escalation: Escalation, budget: EscalationBudget, record: EscalationRecord
) -> None:
    """Its attacks on the survivors, in order (through its own view of the model, if it has one); the record
    takes what they attempted and broke."""
    specs = [
        AttackSpec(
            name=spec.name, label=record.label if i == 0 else f"{record.label}:{spec.label}", params=dict(spec.params)
        )
        for i, spec in enumerate(escalation.specs(ctx, budget))
    ]
    record.attack = ", ".join(spec.name for spec in specs)
    record.settings = dict(specs[0].params) | escalation.describe(ctx)
    ran = ctx.run_attacks(specs, role="escalation", view=escalation.attack_view(ctx))
    record.n_attempted, record.skipped = ran[0].n_attempted, ran[0].skipped
    record.n_broken = sum(r.n_broken for r in ran)


def _still_needed(ctx: HealthContext, results: dict[str, CheckResult], views: list[tuple[str, ModelView]]) -> bool:
    """Whether brute force is still called for after the gradient escalations (see Escalation.fallback)."""
    if not ctx.gradients or not views:
        return True
    return any(
        results[i].status in ("warn", "fail") and results[i].resolved_by is None for i in RECHECKED if i in results
    )


def _recheck(ctx: HealthContext, results: dict[str, CheckResult], views: list[tuple[str, ModelView]]) -> None:
    """A failed re-checkable check that passes under some escalation's view of the model is resolved by it (a cut,
    S6 / S23, only when the active tests pass under the same view; see the module docstring)."""
    for name, view in views:
        under: dict[str, CheckResult] = {}  # each check evaluated at most once under this view
        for check_id in RECHECKED:
            result = results.get(check_id)
            if result is None or result.status not in ("warn", "fail") or result.resolved_by is not None:
                continue
            now = _under(ctx, check_id, name, view, under)
            passes = now.status == "pass"
            if passes and check_id in CUT:
                evidence = [_under(ctx, t, name, view, under) for t in ACTIVE_TESTS if t in results]
                passes = any(e.status == "pass" for e in evidence) and all(
                    e.status in ("pass", "skip") for e in evidence
                )
                if not passes:
                    shown = "; ".join(f"{e.id} {e.status}: {e.message}" for e in evidence) or "no active test could run"
                    result.message += f"; under {name} a gradient flows, but the active tests do not pass ({shown})"
                    continue
            if passes:
                result.resolved_by = name
                result.message += f"; under {name}: {now.message} (resolved)"
            else:
                result.message += f"; under {name} still: {now.message}"


def _under(ctx: HealthContext, check_id: str, name: str, view: ModelView, seen: dict[str, CheckResult]) -> CheckResult:
    """Check `check_id` evaluated under escalation `name`'s view (isolated: an error resolves nothing)."""
    if check_id not in seen:
        check = HEALTH_CHECKS.get(check_id)
        with isolated("re-check", check_id, f"under {name}") as failed:
            seen[check_id] = check.evaluate(ctx, view)
        if failed:
            seen[check_id] = check.result("error", None, failed.error or "failed")
    return seen[check_id]


def finish_records(ctx: HealthContext, records: list[EscalationRecord]) -> None:
    """Fill in what each before-battery escalation attempted and broke, from its column."""
    for record in records:
        ran = next((r for r in ctx.outcome.records if r.label == record.label), None)
        if ran is not None:
            record.n_attempted, record.n_broken, record.seconds = ran.n_attempted, ran.n_broken, ran.seconds
            record.skipped = ran.skipped
