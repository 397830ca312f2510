"""Checks of what the battery did (evaluation.md S8-S15, S17-S21). The ones with a probe have it run on the
battery's survivors first: whatever a probe breaks is a verified adversarial example and counts as broken."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from robustprune.attacks.battery import predict
from robustprune.attacks.pgd_core import cross_entropy_objective, pgd, random_delta
from robustprune.config import AttackSpec
from robustprune.metrics.accuracy import wilson_interval
from robustprune.scoring.health.base import (
    MODEL_SAMPLE,
    PROBE_SAMPLE,
    Check,
    CheckResult,
    HealthContext,
    ModelTransform,
    column_breaks,
    input_gradient,
    register_check,
)
from robustprune.sparsity import current_masks

NOISE_DRAWS = 20
TARGETED_SHARE = 0.5  # a healthy model's targeted attacks add a quarter or so after a weak untargeted PGD
SENTINEL_QUERIES = 250  # a masked model falls to Square within a few hundred queries


def _gradient_labels(ctx: HealthContext) -> list[str]:
    return [
        r.label
        for r in ctx.outcome.records
        if r.label in ctx.battery_labels and not r.skipped and ctx.attack_class(r.label).uses_gradients
    ]


@register_check("S8")
class BlackBoxVsWhiteBox(Check):
    needs_ball = True
    name = "gradient-free attacks do not beat the gradient attacks"
    stage = "outcome"
    threshold = "examples broken only by a gradient-free attack > 0.2 % of n: warn (AutoAttack's rule)"
    how_to_fix = "the gradient attacks fail on this model (masking): trust the gradient-free numbers, remove masking"

    def probe(self, ctx: HealthContext) -> tuple[AttackSpec, int | None] | None:
        free = [lbl for lbl in ctx.battery_labels if not ctx.attack_class(lbl).uses_gradients]
        if free or not _gradient_labels(ctx):
            return None
        return AttackSpec(
            name="square", params={"n_queries": SENTINEL_QUERIES, "n_restarts": 1, "p_init": 0.8}
        ), PROBE_SAMPLE

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        if not _gradient_labels(ctx):
            return self.skip("no gradient attack ran")
        order = [r.label for r in ctx.outcome.records]
        first_gradient = min(order.index(lbl) for lbl in _gradient_labels(ctx))
        free = [
            lbl
            for lbl in [*ctx.battery_labels, ctx.probe_labels.get(self.id)]
            if lbl in ctx.outcome.columns
            and not ctx.attack_class(lbl).uses_gradients
            and order.index(lbl) > first_gradient
        ]
        if not free:
            return self.skip("no gradient-free attack ran after the gradient attacks")
        broken = len(np.unique(np.concatenate([column_breaks(ctx, lbl) for lbl in free])))
        share = broken / len(ctx.y)
        if share > 0.002:
            return self.result(
                "warn", broken, f"{broken} examples fell to {', '.join(free)} after the gradient attacks"
            )
        return self.result("pass", broken, f"gradient-free attacks ({', '.join(free)}) broke nothing gradients left")


class ProbeCheck(Check):
    """A check that is one probe attack on the survivors: warn when the probe breaks any of them."""

    spec: AttackSpec
    sample: int | None = None
    needs_gradients = True
    needs_ball = True

    def skip_reason(self, ctx: HealthContext) -> str | None:
        if self.needs_gradients and not ctx.gradients:
            return "no gradient reaches the input (S6)"
        return None

    def probe(self, ctx: HealthContext) -> tuple[AttackSpec, int | None] | None:
        return None if self.skip_reason(ctx) else (self.spec, self.sample)

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        why = self.skip_reason(ctx)
        if why:
            return self.skip(why)
        label = ctx.probe_labels.get(self.id)
        broken = len(column_breaks(ctx, label))
        return self.verdict(broken, ctx)

    def verdict(self, broken: int, ctx: HealthContext) -> CheckResult:
        if broken:
            return self.result("warn", broken, f"{broken} examples the battery left fell to {self.spec.name}")
        return self.result("pass", 0, f"{self.spec.name} broke nothing the battery left")


@register_check("S9")
class TransferFromParent(ProbeCheck):
    name = "transfer from the dense parent does not beat white-box"
    stage = "outcome"
    threshold = "any example broken by PGD crafted on the parent that the battery left: warn"
    how_to_fix = "the pruned model hides its gradients from the battery: its parent's gradient breaks it"
    spec = AttackSpec(name="transfer_pgd", params={"steps": 100, "rel_step": 0.025, "restarts": 1})
    needs_gradients = False

    def skip_reason(self, ctx: HealthContext) -> str | None:
        return None if ctx.parent is not None else "no parent model is known (pass --parent)"


@register_check("S10")
class NoiseVsGradients(ProbeCheck):
    name = "random noise does not beat the gradient attacks"
    stage = "outcome"
    threshold = f"any example the battery left broken by one of {NOISE_DRAWS} uniform draws in the eps-ball: warn"
    how_to_fix = "gradient attacks miss what random search finds (masking): escalate with gradient-free attacks"
    spec = AttackSpec(name="uniform_noise", params={"draws": NOISE_DRAWS})
    needs_gradients = False


@register_check("S11")
class SingleStepVsIterative(ProbeCheck):
    name = "a single step does not beat the iterative attacks"
    stage = "outcome"
    threshold = "any example the battery left broken by one gradient step of size eps: warn"
    how_to_fix = "the iterative attacks are stuck (step size, masking): check their settings, escalate"
    spec = AttackSpec(name="single_step")


@register_check("S12")
class MonotoneInEps(ProbeCheck):
    name = "monotone in eps"
    stage = "outcome"
    threshold = "examples the battery left at eps broken inside eps/2: 1 warn, 2 or more fail"
    how_to_fix = "an attack that breaks at eps/2 but not at eps is not converging: more steps, restarts, other losses"
    spec = AttackSpec(name="probe_pgd", params={"steps": 20, "rel_step": 0.125, "eps_fraction": 0.5})
    sample = 2 * PROBE_SAMPLE

    def verdict(self, broken: int, ctx: HealthContext) -> CheckResult:
        if broken >= 2:
            return self.result("fail", broken, f"{broken} examples broken inside eps/2 survived the battery at eps")
        if broken == 1:
            return self.result("warn", 1, "1 example broken inside eps/2 survived the battery at eps")
        return self.result("pass", 0, "nothing the battery left breaks inside eps/2")


def unbounded_accuracy(ctx: HealthContext, transform: ModelTransform | None = None) -> tuple[float, int] | None:
    """Accuracy under PGD with eps = the whole input range (100 steps) on up to PROBE_SAMPLE correctly classified
    examples, optionally with the model transformed (BPDA, rescaled logits); None when none is correct."""
    correct = np.flatnonzero(ctx.outcome.clean.correct)[:PROBE_SAMPLE]
    if len(correct) == 0:
        return None
    x, y = ctx.x[correct], ctx.y[correct]
    norm = ctx.battery.threat.norm
    eps = 1.0 if norm == "Linf" else math.sqrt(x[0].numel())
    model = ctx.model
    with transform(model) if transform else nullcontext(model) as attacked:
        x_adv, _ = pgd(
            cross_entropy_objective(attacked, y, deterministic=not ctx.randomized),
            x,
            norm=norm,
            eps=eps,
            alpha=eps / 50,
            steps=100,
            random_start=False,
            generator=torch.Generator().manual_seed(ctx.seed),
        )
    acc = float(predict(model, x_adv, y, batch_size=ctx.batch_size, n_passes=ctx.n_passes).correct.mean())
    return acc, len(correct)


@register_check("S13")
class UnboundedReachesChance(Check):
    name = "an unbounded attack reaches chance"
    stage = "outcome"
    threshold = "accuracy under PGD with eps = the input range > 1/C: warn; > half the clean accuracy: fail"
    how_to_fix = (
        "a model an unbounded attack cannot break hides its gradients: robustprune escalates (BPDA, rescaled "
        "logits, gradient-free attacks); fix the masking layer to evaluate it properly"
    )

    def evaluate(self, ctx: HealthContext, transform: ModelTransform | None = None) -> CheckResult:
        if not ctx.gradients and transform is None:
            return self.skip("no gradient reaches the input (S6)")
        measured = unbounded_accuracy(ctx, transform)
        if measured is None:
            return self.skip("no example is classified correctly")
        acc, n = measured
        clean = float(ctx.outcome.clean.correct.mean())
        if acc > 0.5 * clean:
            return self.result("fail", acc, f"{acc:.1%} of {n} examples survive an unbounded attack")
        if acc > 1.0 / ctx.num_classes:
            return self.result("warn", acc, f"{acc:.1%} of {n} examples survive an unbounded attack (chance 1/C)")
        return self.result("pass", acc, f"an unbounded attack leaves {acc:.1%} of {n} examples correct")


def battery_steps(ctx: HealthContext) -> int:
    """The most iterations any of the battery's gradient attacks ran (0 when none states a step count)."""
    steps = [ctx.record(label).description["settings"].get("steps", 0) for label in _gradient_labels(ctx)]
    return max((int(s) for s in steps if isinstance(s, int | float)), default=0)


@register_check("S14")
class Convergence(ProbeCheck):
    name = "the gradient attacks converged"
    stage = "outcome"
    threshold = (
        f"PGD with twice the battery's steps (50 to 200) breaks 2 or more of {PROBE_SAMPLE} survivors, or the loss "
        "still rises at the end for most of them: warn"
    )
    how_to_fix = "give the gradient attacks more steps or restarts (robustprune escalates with more steps)"
    spec = AttackSpec(name="probe_pgd", params={"steps": 200, "rel_step": 0.02, "restarts": 1})
    sample = PROBE_SAMPLE

    def probe(self, ctx: HealthContext) -> tuple[AttackSpec, int | None] | None:
        if self.skip_reason(ctx):
            return None
        steps = min(200, max(50, 2 * battery_steps(ctx)))
        # the same total travel (4 eps) whatever the step count
        return AttackSpec(
            name="probe_pgd", params={"steps": steps, "rel_step": 4.0 / steps, "restarts": 1}
        ), self.sample

    def verdict(self, broken: int, ctx: HealthContext) -> CheckResult:
        record = next((r for r in ctx.outcome.records if r.label == ctx.probe_labels.get(self.id)), None)
        still = 0.0
        steps = record.description["settings"]["steps"] if record is not None else "?"
        if record is not None and record.trace is not None:
            late = record.trace.improvement_at_end(window=20)
            moving = late[~np.isnan(late)]
            still = float((moving > 0.05).mean()) if len(moving) else 0.0
        found = f"PGD-{steps} broke {broken} of the survivors it tried; the loss still rose at the end for {still:.0%}"
        return self.result("warn" if broken >= 2 or still > 0.5 else "pass", broken, found)


@register_check("S15")
class SilentSuccess(Check):
    name = "no silent success"
    stage = "outcome"
    threshold = "an attack found an adversarial iterate but its returned point is not broken: fail (warn if randomized)"
    how_to_fix = "an attack that loses what it found returns the wrong point (a best-so-far bug): fix or replace it"

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        traced = [r for r in ctx.outcome.records if r.trace is not None]
        if not traced:
            return self.skip("no attack recorded its iterates")
        lost = 0
        for record in traced:
            column = ctx.outcome.columns[record.label]
            attempted = np.flatnonzero(column.attempted)
            found = record.trace.found_adversarial
            if len(found) != len(attempted):
                continue
            lost += int((found & ~column.broken[attempted]).sum())
        if lost:
            status = "warn" if ctx.randomized else "fail"
            return self.result(status, lost, f"{lost} adversarial iterates were found but not returned")
        return self.result("pass", 0, f"every adversarial iterate found ({len(traced)} traced attacks) was returned")


@register_check("S17")
class TargetedOnly(Check):
    name = "untargeted attacks are not much weaker than targeted ones"
    stage = "outcome"
    threshold = f"examples broken only by the targeted attacks > {TARGETED_SHARE:.0%} of all the battery broke: warn"
    how_to_fix = (
        "the untargeted (cross-entropy) attacks miss what targeted margin losses find, a sign of a masked or "
        "saturated loss: trust the margin-loss attacks' numbers, rescale the logits"
    )

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        ran = [lbl for lbl in ctx.battery_labels if not ctx.record(lbl).skipped]
        targeted = [lbl for lbl in ran if ctx.is_targeted(lbl)]
        if not targeted or len(targeted) == len(ran):
            return self.skip("the battery does not run both targeted and untargeted attacks")
        everything = sum(len(column_breaks(ctx, lbl)) for lbl in ran)
        only = sum(len(column_breaks(ctx, lbl)) for lbl in targeted)  # they run on what the others left
        share = only / everything if everything else 0.0
        if share > TARGETED_SHARE:
            return self.result(
                "warn", only, f"{only} of the {everything} examples the battery broke fell to targeted attacks alone"
            )
        return self.result(
            "pass", only, f"{only} of the {everything} examples the battery broke fell to targeted attacks alone"
        )


@register_check("S18")
class OutputValidity(Check):
    name = "adversarial examples reproduce"
    stage = "outcome"
    threshold = "a broken example classified correctly again on a fresh pass: fail (randomized: > 20 % warn)"
    how_to_fix = "verdicts that do not reproduce come from a stateful or nondeterministic model: make it deterministic"

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        broken = np.flatnonzero(ctx.outcome.broken & ctx.outcome.clean.correct)
        if len(broken) == 0:
            return self.skip("no adversarial example to re-check")
        index = torch.from_numpy(broken)
        again = predict(
            ctx.model, ctx.outcome.worst_x[index], ctx.y[index], batch_size=ctx.batch_size, n_passes=ctx.n_passes
        )
        lost = int(again.correct.sum())
        if ctx.randomized and lost > 0.2 * len(broken):
            return self.result(
                "warn", lost, f"{lost} of {len(broken)} adversarial examples were correct on fresh passes"
            )
        if not ctx.randomized and lost:
            return self.result("fail", lost, f"{lost} of {len(broken)} adversarial examples no longer fool the model")
        return self.result("pass", lost, f"all {len(broken)} adversarial examples still fool the model")


@register_check("S19")
class ReferenceAccuracy(Check):
    name = "clean accuracy matches the recorded one"
    stage = "outcome"
    threshold = "the recorded accuracy outside the 99.9 % Wilson interval of the measured one: fail"
    how_to_fix = "the scored model is not the one that was trained (weights, normalization, data): check the inputs"

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        if ctx.reference_acc is None:
            return self.skip("no recorded clean accuracy for this model")
        if ctx.randomized:  # correct on every one of n passes is stricter than the recorded one-pass accuracy
            return self.skip(
                f"the model is randomized: its clean accuracy counts an example only if all {ctx.n_passes} passes "
                "get it right, the recorded one is a single pass"
            )
        correct = int(ctx.outcome.clean.correct.sum())
        lo, hi = (100.0 * bound for bound in wilson_interval(correct, len(ctx.y), 0.999))
        reference = 100.0 * ctx.reference_acc
        if not lo <= reference <= hi:
            return self.result("fail", reference, f"recorded {reference:.2f} %, measured interval [{lo:.2f}, {hi:.2f}]")
        return self.result("pass", reference, f"recorded {reference:.2f} % lies in [{lo:.2f}, {hi:.2f}]")


def _final_linear(model: nn.Module) -> nn.Linear | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def features_carry_gradient(ctx: HealthContext, transform: ModelTransform | None = None) -> bool:
    """Whether the input of the model's final Linear layer (the features S20's head reads) depends differentiably
    on the input, as the model is attacked (under `transform`)."""
    head = _final_linear(ctx.model)
    feats: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda module, args: feats.append(args[0]))
    try:
        x = ctx.x[:1].clone().requires_grad_(True)
        with transform(ctx.model) if transform else nullcontext(ctx.model), torch.enable_grad():
            ctx.model(x)
    finally:
        handle.remove()
    return bool(feats) and isinstance(feats[-1], torch.Tensor) and feats[-1].requires_grad


def binarization_success(
    ctx: HealthContext, transform: ModelTransform | None = None, k: int = 8
) -> tuple[float, int] | None:
    """The active test of Zimmermann et al. (NeurIPS 2022), our construction: for k correctly classified examples,
    a binary head on the model's last features is fitted so that random points of the eps-ball are class 1 and the
    clean example class 0; an adversarial example therefore exists inside eps by construction, and the attack must
    find it. Returns (success rate, k) or None when the model has no final Linear layer."""
    head = _final_linear(ctx.model)
    correct = np.flatnonzero(ctx.outcome.clean.correct)[:k]
    if head is None or len(correct) == 0:
        return None
    feats: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda module, args: feats.append(args[0]))
    threat = ctx.battery.threat
    generator = torch.Generator().manual_seed(ctx.seed + 20)
    successes = 0
    try:
        for i in correct:
            x = ctx.x[i : i + 1]
            ball = (x + random_delta(x.repeat(32, 1, 1, 1), threat.norm, threat.eps, generator)).clamp(0, 1)
            feats.clear()
            with torch.no_grad():
                ctx.model(torch.cat([x, ball]))
            z = feats[-1].flatten(1).double()
            w, b = _separate(z[:1], z[1:])

            def binary(inp: torch.Tensor, w=w, b=b, model=ctx.model) -> torch.Tensor:
                feats.clear()
                model(inp)
                score = feats[-1].flatten(1).double() @ w + b
                return torch.stack([-score, score], dim=1).to(inp.dtype)

            class Binary(nn.Module):
                def forward(self, inp: torch.Tensor) -> torch.Tensor:
                    return binary(inp)

            with transform(ctx.model) if transform else nullcontext(ctx.model):
                _, trace = pgd(
                    cross_entropy_objective(Binary(), torch.zeros(1, dtype=torch.long, device=x.device)),
                    x,
                    norm=threat.norm,
                    eps=threat.eps,
                    alpha=threat.eps / 8,
                    steps=50,
                    random_start=False,
                    generator=generator,
                )
            successes += int(trace.found_adversarial[0])
    finally:
        handle.remove()
    return successes / len(correct), len(correct)


def _separate(inside: torch.Tensor, ball: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear score that is negative at the clean example's features and positive at every ball point's: the
    direction from the clean features to the ball's mean, its offset half way to the closest ball point."""
    direction = ball.mean(dim=0) - inside[0]
    if float(direction.norm()) == 0:
        direction = torch.ones_like(direction)
    direction = direction / direction.norm()
    projections = ball @ direction
    origin = float(inside[0] @ direction)
    offset = origin + 0.5 * max(float(projections.min()) - origin, 1e-6)
    return direction, torch.tensor(-offset, dtype=direction.dtype, device=direction.device)


@register_check("S20")
class BinarizationTest(Check):
    needs_ball = True
    name = "the attack passes the active binarization test"
    stage = "outcome"
    threshold = "PGD finds a planted adversarial example in < 90 % of cases: warn; < 50 %: fail"
    how_to_fix = "the attack cannot find adversarial examples that exist: the evaluation is broken (masking, bugs)"

    def evaluate(self, ctx: HealthContext, transform: ModelTransform | None = None) -> CheckResult:
        if not ctx.gradients and transform is None:
            return self.skip("no gradient reaches the input (S6)")
        if ctx.randomized:
            return self.skip("the model is randomized: its features change between passes")
        if _final_linear(ctx.model) is not None and not features_carry_gradient(ctx, transform):
            return self.result(
                "fail", 0.0, "no gradient reaches the features the planted head reads: the attack cannot find it"
            )
        measured = binarization_success(ctx, transform)
        if measured is None:
            return self.skip("no final Linear layer to plant a binary head on")
        rate, k = measured
        if rate < 0.5:
            return self.result("fail", rate, f"the attack found the planted example in {rate:.0%} of {k} cases")
        if rate < 0.9:
            return self.result("warn", rate, f"the attack found the planted example in {rate:.0%} of {k} cases")
        return self.result("pass", rate, f"the attack found the planted example in {rate:.0%} of {k} cases")


@register_check("S21")
class PruningSanity(Check):
    name = "pruning is applied and does not mask gradients"
    stage = "outcome"
    threshold = (
        "a pruned weight non-zero in the weight the forward pass uses: fail; zero-gradient examples more than 5 "
        "points above the parent's: warn"
    )
    how_to_fix = (
        "apply masks in the forward pass (weight * mask, as torch.nn.utils.prune does); a pruned model that masks "
        "gradients needs the escalations (transfer from the parent, gradient-free attacks)"
    )

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        pruned = {name: mask for name, mask in current_masks(ctx.model).items() if not bool(mask.all())}
        if not pruned and ctx.parent is None:
            return self.skip("the model has no pruned weight and no parent is known")
        leaked = _unapplied_masks(ctx.model, pruned, ctx.x[:2])
        if leaked:
            return self.result(
                "fail", leaked[0], f"layer {leaked[0]} computes with weights its mask prunes: the mask is not applied"
            )
        if ctx.parent is not None and ctx.gradients:
            ours, theirs = _zero_gradient_share(ctx.model, ctx), _zero_gradient_share(ctx.parent, ctx)
            if ours > theirs + 0.05:
                return self.result(
                    "warn", ours, f"{ours:.1%} of examples have a zero input gradient, {theirs:.1%} on the parent"
                )
            return self.result(
                "pass", ours, f"zero-gradient share {ours:.1%} (parent {theirs:.1%}); {len(pruned)} pruned layers"
            )
        return self.result("pass", len(pruned), f"{len(pruned)} pruned layers, every mask applied in the forward pass")


def _unapplied_masks(model: nn.Module, masks: dict[str, torch.Tensor], x: torch.Tensor) -> list[str]:
    """Layers whose weight, as the forward pass reads it, is non-zero where the mask prunes it."""
    used: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())

    def keep(name: str) -> Callable[..., None]:
        return lambda module, args, output: used.__setitem__(name, module.weight.detach().clone())

    handles = [modules[name].register_forward_hook(keep(name)) for name in masks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [name for name, mask in masks.items() if name in used and bool((used[name][~mask] != 0).any())]


def _zero_gradient_share(model: nn.Module, ctx: HealthContext) -> float:
    grad = input_gradient(model, ctx.x[:MODEL_SAMPLE], ctx.y[:MODEL_SAMPLE])
    if grad is None:
        return 1.0
    return float((grad.flatten(1).abs().sum(dim=1) == 0).double().mean())
