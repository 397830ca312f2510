"""Checks of the model itself, run before any attack (evaluation.md S1-S7, S16, S22 for saturated logits and S23
for gradient stops inside the forward pass). Their results decide how the model is attacked: S2 makes it
randomized (EOT, verdicts over repeated passes), S6 withholds gradient attacks, S1 / S22 call for rescaled logits,
S7 locates layers and S23 operations for BPDA."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from robustprune.attacks.base import ATTACKS
from robustprune.attacks.gradient_stops import locate_gradient_stops, straight_through_ops
from robustprune.attacks.pgd_core import random_delta
from robustprune.models.modes import mode_matters
from robustprune.scoring.health.base import (
    Check,
    CheckResult,
    HealthContext,
    ModelTransform,
    input_gradient,
    register_check,
)

SATURATED_LOGIT = 1000.0  # |logit| beyond this saturates a float32 softmax for almost every example
UNSTABLE_LOSS = 0.1
STOP_SAMPLE = 16  # examples S23 compares gradients on
KEPT_NORM = 0.1  # S23: an input gradient keeping less than this share of the straight-through one's norm is cut ...
KEPT_COSINE = 0.5  # ... and so is one pointing elsewhere
AGREE_NORM, AGREE_COSINE = 0.9, 0.99  # one that keeps less than this, or turns further, is bent (a partial cut)
CUT_SHARE = 0.1  # S23 fails (warns) when more than this share of examples has a cut (bent) gradient


def _logits(ctx: HealthContext) -> torch.Tensor:
    if "logits" not in ctx.cache:
        with torch.no_grad():
            ctx.cache["logits"] = ctx.model(ctx.sample[0]).detach()
    return ctx.cache["logits"]


def _probabilities(out: torch.Tensor) -> bool:
    out = out.double()
    return bool(
        out.min() > -1e-5
        and out.max() < 1 + 1e-5
        and torch.allclose(out.sum(dim=1), torch.ones(len(out), dtype=out.dtype, device=out.device), atol=1e-5)
    )


@register_check("S1")
class ProbabilityOutput(Check):
    name = "logits, not probabilities"
    stage = "model"
    threshold = "rows in [0,1] summing to 1 (or exp of them): warn"
    how_to_fix = "return logits: remove the model's final softmax / log_softmax (attack losses assume logits)"

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        out = _logits(ctx).double()
        if _probabilities(out):
            return self.result("warn", "probabilities", "the model returns probabilities, not logits")
        if out.max() <= 1e-6 and torch.allclose(
            out.exp().sum(dim=1), torch.ones(len(out), dtype=out.dtype, device=out.device), atol=1e-5
        ):
            return self.result("warn", "log-probabilities", "the model returns log-probabilities, not logits")
        return self.result("pass", "logits", "the outputs are logits")


@register_check("S2")
class Determinism(Check):
    name = "deterministic forward pass"
    stage = "model"
    threshold = (
        "normalized logits differ by > 1e-4 over 5 passes, or with the batch's composition (model contract): warn "
        "(scored as randomized)"
    )
    how_to_fix = "remove randomness at inference, or keep it and rely on the EOT attacks and repeated-pass verdicts"

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        x = ctx.sample[0]
        batch = ctx.cache.get("batch_difference")  # the model contract's: rows that move with their batch-mates
        if batch is not None:
            return self.result(
                "warn",
                batch,
                f"an example's logits change with the other examples in its batch (by up to {batch:.3g}, model "
                "contract); scored as a randomized model, each verdict over repeated passes, with an EOT attack",
            )
        with torch.no_grad():
            outs = [nn.functional.normalize(ctx.model(x).double().flatten(1), dim=1) for _ in range(5)]
        spread = max(float((o - outs[0]).norm(dim=1).max()) for o in outs)
        if spread > 1e-4:
            return self.result(
                "warn",
                spread,
                f"the forward pass is not deterministic (normalized logits differ by up to {spread:.3g} over 5 "
                "passes); scored as a randomized model, each verdict over repeated passes, with an EOT attack",
            )
        return self.result("pass", spread, "five passes give the same logits")


@register_check("S3")
class TrainMode(Check):
    name = "handed over in eval mode"
    stage = "model"
    threshold = "a module whose output depends on the mode (BatchNorm, Dropout, ...) in train mode: warn"
    how_to_fix = "call model.eval() before scoring, or return the model in eval mode from its factory"

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        names = ctx.cache.get("train_mode_modules") or []
        if names and mode_matters(ctx.model, names):
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            return self.result(
                "warn",
                len(names),
                f"the model was handed over in train mode ({shown}) and its output depends on the mode; it was "
                "scored in eval mode: if it is deployed in train mode, this number does not describe it",
            )
        return self.result("pass", len(names), "no mode-dependent module was handed over in train mode")


@contextmanager
def _count_gradient_calls() -> Any:
    counts = {"n": 0}
    grad, backward = torch.autograd.grad, torch.Tensor.backward

    def counting_grad(*args: Any, **kwargs: Any) -> Any:
        counts["n"] += 1
        return grad(*args, **kwargs)

    def counting_backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        counts["n"] += 1
        return backward(self, *args, **kwargs)

    torch.autograd.grad, torch.Tensor.backward = counting_grad, counting_backward
    try:
        yield counts
    finally:
        torch.autograd.grad, torch.Tensor.backward = grad, backward


@register_check("S4")
class OptimizationInForward(Check):
    name = "no optimization inside the forward pass"
    stage = "model"
    threshold = "any autograd.grad / backward call during a forward pass: warn"
    how_to_fix = (
        "a forward pass that optimizes (test-time defenses, purification) needs an adaptive attack through that "
        "optimization (BPDA / EOT); report this evaluation as a lower bound of the attacker's strength"
    )

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        x = ctx.sample[0][:8].clone().requires_grad_(True)
        with _count_gradient_calls() as counts, torch.enable_grad():
            ctx.model(x)
        if counts["n"]:
            return self.result("warn", counts["n"], f"the forward pass calls autograd {counts['n']} times")
        return self.result("pass", 0, "the forward pass computes no gradient")


@register_check("S5")
class ClassCount(Check):
    name = "class count fits the targeted attacks"
    stage = "model"
    threshold = "a targeted attack asked for more targets than num_classes - 1: warn"
    how_to_fix = "lower the attack's n_target_classes to num_classes - 1, or state the capped number"

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        asked = [
            (a.label, int(a.params.get("n_target_classes", ATTACKS.get(a.name).defaults["n_target_classes"])))
            for a in ctx.battery.active_attacks()
            if "n_target_classes" in ATTACKS.get(a.name).defaults
        ]
        if not asked:
            return self.skip("the battery has no targeted attack")
        over = [(label, k) for label, k in asked if k > ctx.num_classes - 1]
        if over:
            text = ", ".join(f"{label} asked for {k}" for label, k in over)
            return self.result(
                "warn", ctx.num_classes, f"{text} targets but only {ctx.num_classes - 1} exist; capped at that"
            )
        return self.result("pass", ctx.num_classes, f"{ctx.num_classes} classes: every targeted attack fits")


@register_check("S6")
class GraphIntact(Check):
    name = "a gradient reaches the input"
    stage = "model"
    threshold = "backward to the input raises or yields nothing: fail"
    how_to_fix = (
        "remove the detach / no_grad / non-differentiable step from the forward pass, or give it a differentiable "
        "approximation (BPDA) so gradient attacks can run"
    )

    def evaluate(self, ctx: HealthContext, transform: ModelTransform | None = None) -> CheckResult:
        x, y = ctx.sample
        if transform is None:
            why = _no_gradient_reason(ctx.model, x, y)
            if why is not None:
                return self.result("fail", 0, f"{why}: gradient attacks cannot run")
            return self.result("pass", 1, "the loss has a gradient with respect to the input")
        with transform(ctx.model) as attacked:  # re-checked under an escalation's view (BPDA through the cut)
            grad = input_gradient(attacked, x, y)
        if grad is None or not bool((grad != 0).any()):
            return self.result("fail", 0, "no gradient reaches the input through this view either")
        return self.result("pass", 1, "a gradient reaches the input through this view")


def _no_gradient_reason(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> str | None:
    """None when the loss has a gradient with respect to the input, else why not (the graph is cut, or backward
    itself fails: an in-place edit of a tensor autograd saved, say)."""
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(xg), y, reduction="sum")
        if not loss.requires_grad:
            return "no gradient reaches the input"
        try:
            torch.autograd.grad(loss, xg)
        except RuntimeError as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"no gradient reaches the input (backward raised: {text[:160]})"
    return None


def gradient_killers(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """Leaf modules whose output receives a gradient while their input receives none, same shape in and out:
    the layers BPDA can pass straight through (input quantization, rounding, hard thresholds)."""
    seen: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: Any) -> None:
            inp = args[0] if args else None
            if isinstance(inp, torch.Tensor) and isinstance(output, torch.Tensor) and inp.requires_grad:
                if output.requires_grad:
                    output.retain_grad()
                inp.retain_grad()
                seen.append((name, inp, output))

        return record

    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    try:
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            nn.functional.cross_entropy(model(xg), y, reduction="sum").backward()
    finally:
        for h in handles:
            h.remove()
    killers = []
    for name, inp, out in seen:
        out_grad = out.grad if out.requires_grad else None
        in_grad = inp.grad
        out_alive = out_grad is not None and bool(out_grad.abs().sum() > 0)
        in_dead = in_grad is None or bool(in_grad.abs().sum() == 0)
        if out_alive and in_dead and inp.shape == out.shape:
            killers.append(name)
    return killers


@register_check("S7")
class Gradients(Check):
    name = "input gradients are finite and non-zero"
    stage = "model"
    threshold = "NaN/Inf: fail; any example with an exactly zero or vanishing (< 1e-12) gradient: warn"
    how_to_fix = (
        "zero gradients hide a model from gradient attacks (gradient masking): robustprune escalates (BPDA through "
        "the layers it finds, rescaled logits, more gradient-free queries); remove the masking layer to be sure"
    )

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        if not ctx.gradients:
            return self.skip("no gradient reaches the input (S6)")
        x, y = ctx.sample
        start = (
            x
            + random_delta(x, ctx.battery.threat.norm, ctx.battery.threat.eps, torch.Generator().manual_seed(ctx.seed))
        ).clamp(0, 1)
        norms = []
        for point in (x, start):
            grad = input_gradient(ctx.model, point, y)
            norms.append(grad.flatten(1).abs().sum(dim=1).double())
        both = torch.stack(norms)
        if not torch.isfinite(both).all():
            return self.result(
                "fail", "non-finite", "input gradients contain NaN or Inf: gradient attacks are unreliable"
            )
        if ctx.randomized:
            return self.result("pass", 0.0, "finite gradients (zero-gradient shares of one noisy pass say little)")
        zero = float((both == 0).any(dim=0).double().mean())
        tiny = float(((both > 0) & (both < 1e-12)).any(dim=0).double().mean())
        if zero > 0 or tiny > 0:
            ctx.gradient_killers = gradient_killers(ctx.model, x, y)
            modules = dict(ctx.model.named_modules())
            located = (
                "; the gradient stops at "
                + ", ".join(f"{name} ({type(modules[name]).__name__})" for name in ctx.gradient_killers)
                if ctx.gradient_killers
                else ""
            )
            return self.result(
                "warn",
                max(zero, tiny),
                f"{zero:.1%} of examples have an exactly zero and {tiny:.1%} a vanishing input gradient (at the "
                f"example or at a random start in the eps-ball): possible gradient masking{located}",
            )
        return self.result("pass", 0.0, "every example has a finite, non-zero input gradient")


@register_check("S16")
class UnstableLoss(Check):
    name = "stable loss under tiny noise"
    stage = "model"
    threshold = f"median relative loss change under noise of eps/100 > {UNSTABLE_LOSS}: warn"
    how_to_fix = (
        "a loss that jumps under imperceptible noise (stochastic or quantized layers) misleads gradient steps: "
        "score it as randomized with EOT, or smooth the non-differentiable step for the attack (BPDA)"
    )

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        if ctx.randomized:
            return self.skip("the model is randomized (S2): its loss changes between passes by design")
        x, y = ctx.sample
        radius = ctx.battery.threat.eps / 100
        generator = torch.Generator().manual_seed(ctx.seed + 16)
        with torch.no_grad():
            base = nn.functional.cross_entropy(ctx.model(x), y, reduction="none").double()
            changes = []
            for _ in range(16):
                noise = (torch.rand(x.shape, generator=generator).to(x) - 0.5) * radius
                loss = nn.functional.cross_entropy(ctx.model((x + noise).clamp(0, 1)), y, reduction="none").double()
                changes.append(((loss - base).abs() / (base.abs() + loss.abs() + 1e-3)).clamp(max=1.0))
        value = float(torch.stack(changes).mean(dim=0).median())
        if not math.isfinite(value) or value > UNSTABLE_LOSS:
            return self.result("warn", value, f"the loss changes by {value:.3g} (relative) under noise of eps/100")
        return self.result("pass", value, f"the loss changes by {value:.3g} (relative) under noise of eps/100")


@register_check("S22")
class SaturatedLogits(Check):
    name = "logits not saturated"
    stage = "model"
    threshold = f"max |logit| > {SATURATED_LOGIT:g}: warn"
    how_to_fix = (
        "logits this large make the float32 cross-entropy gradient exactly zero for confident examples: "
        "robustprune attacks rescaled logits; calibrate or rescale the model's output to be sure"
    )

    def evaluate(self, ctx: HealthContext) -> CheckResult:
        out = _logits(ctx)
        if _probabilities(out):
            return self.skip("the model returns probabilities (S1)")
        peak = float(out.abs().max())
        if not math.isfinite(peak) or peak > SATURATED_LOGIT:
            return self.result("warn", peak, f"the largest |logit| is {peak:.4g}: the softmax saturates")
        return self.result("pass", peak, f"the largest |logit| is {peak:.4g}")


def _seeded_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """The input gradient with the RNG seeded first (a randomized model draws the same noise each time); zeros
    where no gradient reaches the input."""
    torch.manual_seed(seed)
    grad = input_gradient(model, x, y)
    return torch.zeros_like(x) if grad is None else grad


@register_check("S23")
class GradientStops(Check):
    name = "no operation in the forward pass cuts the gradient"
    stage = "model"
    threshold = (
        f"a located gradient stop (rounding, detach, no_grad, a discrete value cast to float, numpy, a masking "
        f"Function) after which, on > {CUT_SHARE:.0%} of examples, the input gradient keeps < {KEPT_NORM:.0%} of the "
        f"straight-through gradient's norm or points elsewhere (cosine < {KEPT_COSINE}): fail; keeps < "
        f"{AGREE_NORM:.0%} or turns (cosine < {AGREE_COSINE}): warn"
    )
    how_to_fix = (
        "gradient attacks follow a gradient the forward pass cut: robustprune escalates (BPDA through every located "
        "stop, transfer from the parent, more gradient-free queries); remove the stop or make it straight-through "
        "to evaluate the model properly"
    )

    def evaluate(self, ctx: HealthContext, transform: ModelTransform | None = None) -> CheckResult:
        # At the examples and at a random start in the eps-ball: a forward pass may branch on its input (an early
        # exit that rounds only what does not look clean), so both sides of such a branch are walked.
        clean, y = ctx.sample[0][:STOP_SAMPLE], ctx.sample[1][:STOP_SAMPLE]
        threat = ctx.battery.threat
        start = clean + random_delta(clean, threat.norm, threat.eps, torch.Generator().manual_seed(ctx.seed + 23))
        if transform is None:
            found = locate_gradient_stops(ctx.model, clean) + locate_gradient_stops(ctx.model, start.clamp(0, 1))
            ctx.gradient_stops = list(dict.fromkeys(found))
        stops = ctx.gradient_stops
        x, y = torch.cat([clean, start.clamp(0, 1)]), torch.cat([y, y])
        if not stops:
            return self.result("pass", 0, "no operation of the forward pass stops the gradient")
        shown = "; ".join(s.text() for s in stops[:3]) + (f" and {len(stops) - 3} more" if len(stops) > 3 else "")
        with straight_through_ops(ctx.model):
            bridged = _seeded_gradient(ctx.model, x, y, ctx.seed)
        if transform is None:
            followed = _seeded_gradient(ctx.model, x, y, ctx.seed)
        else:
            with transform(ctx.model) as attacked:
                followed = _seeded_gradient(attacked, x, y, ctx.seed)
        reach = bridged.flatten(1).norm(dim=1)
        ctx.bridged = ctx.bridged or (transform is None and bool((reach > 0).any()))
        if not bool((reach > 0).any()):
            return self.result(
                "fail",
                len(stops),
                f"gradient stops located ({shown}) and no straight-through version restores a gradient",
            )
        kept = followed.flatten(1).norm(dim=1) / reach.clamp_min(1e-30)
        cosine = torch.nn.functional.cosine_similarity(followed.flatten(1), bridged.flatten(1), dim=1)
        cut = ((kept < KEPT_NORM) | (cosine < KEPT_COSINE)) & (reach > 0)
        bent = ((kept < AGREE_NORM) | (cosine < AGREE_COSINE)) & (reach > 0)
        median = float(cosine.median())
        for status, hit, how in (("fail", cut, f"keeps < {KEPT_NORM:.0%} of"), ("warn", bent, "departs from")):
            share = float(hit.double().mean())
            if share > CUT_SHARE:
                return self.result(
                    status,
                    share,
                    f"{shown}: on {int(hit.sum())} of {len(hit)} examples the gradient the attacks follow {how} the "
                    f"straight-through gradient (median cosine {median:.2f})",
                )
        return self.result(
            "pass",
            float(bent.double().mean()),
            f"gradient stops located ({shown}), but the gradient the attacks follow agrees with the straight-through "
            f"one (median cosine {median:.2f})",
        )
