"""`score`: one model, one dataset, one threat model, one battery -> a result people and CI can trust."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from robustprune.attacks.base import NO_GRADIENT
from robustprune.attacks.battery import BatteryOutcome, check_battery, load_battery, run_battery
from robustprune.boundary import isolated, stage
from robustprune.config import BatterySpec, CertifySpec, ThreatModel
from robustprune.config.battery import EpsCurveSpec
from robustprune.config.eps import check_grid_fits, default_eps
from robustprune.data import Dataset, as_dataset, load_dataset
from robustprune.devices import model_device, resolve_device
from robustprune.errors import UsageError, VerificationError
from robustprune.metrics import accuracy_with_ci, calibration_summary
from robustprune.models.guard import ModelGuard, ModelState
from robustprune.models.modes import eval_mode, handed_in_train_mode
from robustprune.provenance import collect
from robustprune.scoring import multihead
from robustprune.scoring.additions import BATCH_DEPENDENT, GRADIENT_FREE, RANDOMIZED
from robustprune.scoring.arguments import check_api_arguments
from robustprune.scoring.audit import failed_audit, run_audit
from robustprune.scoring.bounds import compute_bounds
from robustprune.scoring.bounds_report import BoundsReport
from robustprune.scoring.contract import ModelContract, check_contract
from robustprune.scoring.efficiency import measure_efficiency
from robustprune.scoring.eps_curve import KnownPoints, check_eps_grid, min_norm_curve
from robustprune.scoring.escalation import EscalationBudget, before_battery, escalate, finish_records
from robustprune.scoring.health import (
    CheckResult,
    EscalationRecord,
    HealthContext,
    HealthReport,
    check_model,
    check_outcome,
    ordered_checks,
)
from robustprune.scoring.health.engine import guarded
from robustprune.scoring.per_sample import PerSampleTable
from robustprune.scoring.result import (
    SCHEMA_VERSION,
    AdversarialExamples,
    AttackEntry,
    AuditReport,
    Calibration,
    CalibrationSummary,
    CheckpointRecord,
    Cost,
    DataInfo,
    EfficiencyReport,
    Finding,
    MultiHeadReport,
    Provenance,
    ScoreResult,
    SparsitySummary,
)
from robustprune.scoring.verdict import RULE, derive_verdict
from robustprune.sparsity import sparsity_report
from robustprune.validation import check_int, check_seed
from robustprune.verify.certify import certified_curve

RANDOMIZED_PASSES = 10  # verdicts on a randomized model: correct only if correct on every one of these passes


log = logging.getLogger("robustprune.scoring")


def _as_data(data: Dataset | str | os.PathLike | tuple) -> Dataset:
    if isinstance(data, str | os.PathLike):
        return load_dataset(data, split="test")
    if isinstance(data, tuple):
        return as_dataset(*data)
    return data


def _as_battery(battery: BatterySpec | str | os.PathLike, norm: str | None, eps: float | None) -> BatterySpec:
    if isinstance(battery, os.PathLike):
        battery = os.fspath(battery)
    if isinstance(battery, BatterySpec):
        # Override the threat model of the spec as given: re-reading it by name could find another file (a worker
        # in another directory) or none.
        threat = battery.threat
        return dataclasses.replace(
            battery,
            threat=ThreatModel(
                norm=norm if norm is not None else threat.norm, eps=eps if eps is not None else threat.eps
            ),
        )
    return load_battery(battery, norm=norm, eps=eps)


def recorded_accuracy(checkpoint: dict[str, Any] | None, data: Dataset) -> float | None:
    """The clean accuracy a train manifest recorded for these weights (S19 compares it), as a fraction; only when
    it was measured on the data being scored (the manifest's validation fingerprint), else there is nothing to
    compare."""
    manifest = (checkpoint or {}).get("manifest") or {}
    final, dataset = manifest.get("final") or {}, manifest.get("dataset") or {}
    if not isinstance(final, dict) or not isinstance(dataset, dict):
        return None
    if dataset.get("val_fingerprint") != data.fingerprint():
        return None
    value = final.get("val_acc")
    return float(value) if isinstance(value, int | float) and 0 <= value <= 1 else None


def score(
    model: nn.Module,
    data: Dataset | str | tuple,
    battery: BatterySpec | str,
    *,
    norm: str | None = None,
    eps: float | None = None,
    n: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    architecture: str | None = None,
    checkpoint: dict[str, Any] | None = None,
    command: list[str] | None = None,
    progress: bool = False,
    head_battery: BatterySpec | str | None = None,
    parent: nn.Module | None = None,
    reference_acc: float | None = None,
    escalation_budget: EscalationBudget | None = None,
    efficiency: bool = True,
    device: str | torch.device | None = None,
    eps_grid: list[float] | None = None,
    certify: CertifySpec | str | dict[str, Any] | None = None,
) -> ScoreResult:
    """Score `model` on `data` under `battery`, with the health checks, escalations and verdict.

    Args:
        data: a Dataset, "digits" or a path (its test split), or an (x, y) pair of tensors/arrays.
        battery: a BatterySpec, a battery name ("standard") or a TOML path; `norm`/`eps` override its threat model.
        n: score the first n examples (all when None).
        checkpoint: the CheckpointInfo dict of the weights, recorded in the provenance (its train manifest's
            final validation accuracy is the reference S19 checks, unless `reference_acc` is given).
        head_battery: for multi-head (DIO) models, the battery run against each head in fixed mode for the
            per-head report (default: `battery`); it gets the same threat model and its name is recorded.
        parent: the dense model this one was pruned from: adversarial examples crafted on it are tried on this
            one (S9, and escalation when masking is suspected).
        reference_acc: a clean accuracy recorded for this model elsewhere (a fraction), checked by S19.
        escalation_budget: how hard escalations attack (default: EscalationBudget(), what the CLI uses).
        efficiency: measure params, MACs and latency of the model and of its compacted form (closed channels
            removed); the timings are measurements of this machine, recorded beside the deterministic result.
        device: where to score ("auto", "cpu", "cuda", "cuda:N", "mps" or a torch.device; see
            robustprune.devices); None keeps the model where it is. The model (and `parent`) and the data are moved
            there once, before anything runs; the result holds no device tensors.
        eps_grid: also run the minimum-norm attacks (FMN and FAB; robustprune.attacks.min_norm) once in the
            battery's norm and record robust accuracy at each of these eps (`result.eps_curve`: UPPER BOUNDS from
            those attacks and the battery's own points, each adversarial point verified). Replaces the grid of the
            battery's [eps_curve] table; None (default): that table's curve, or none. The fixed-eps battery number
            stays the headline. A model without usable gradients gets no curve (`result.eps_curve_skipped` says why).
        certify: the bracket beside the attacks (a CertifySpec, a method name or a table): "auto" (default: CROWN
            lower bounds where the verifier supports the model and it is small), "none", "crown", or "exact" (CROWN,
            then the big-M MILP on the survivors CROWN leaves, within exact_time_limit per example and exact_budget
            in all; its verified counterexamples count). `result.bounds` holds the bracket, the per-sample table
            each example's status.

    Raises:
        UsageError: bad input, or a model unusable from the start (it breaks the model contract: exit 2).
        UserCodeError: the model or an attack failed during the run (exit 1); ModelChanged: something changed the
            model while it was evaluated (exit 1; the model is restored). Stages after the battery never raise:
            what fails there is recorded (`stage_errors`, a check's `error`) and read by the verdict.
    """
    with _callers_rng_kept(device):
        return _score(
            model,
            data,
            battery,
            architecture=architecture,
            command=command,
            norm=norm,
            eps=eps,
            n=n,
            batch_size=batch_size,
            seed=seed,
            head_battery=head_battery,
            parent=parent,
            reference_acc=reference_acc,
            checkpoint=checkpoint,
            device=device,
            eps_grid=eps_grid,
            escalation_budget=escalation_budget,
            progress=progress,
            efficiency=efficiency,
            certify=certify,
        )


@contextlib.contextmanager
def _callers_rng_kept(device: Any) -> Iterator[None]:
    """score() seeds torch for its own determinism; the caller's generators (torch's, CUDA's, numpy's global one)
    are put back afterwards."""
    state = np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            np.random.set_state(state)


def _score(
    model: nn.Module, data: Any, battery: Any, *, architecture: str | None, command: Any, **options: Any
) -> ScoreResult:
    """score() with the caller's random generators set aside (see score for the arguments)."""
    if hasattr(options.get("checkpoint"), "to_dict"):  # a CheckpointInfo as load_checkpoint returned it
        options["checkpoint"] = options["checkpoint"].to_dict()
    check_api_arguments(model, data, battery, architecture=architecture, command=command, **options)
    run = prepare(model, data, battery, **options)
    run.architecture = architecture or getattr(model, "robustprune_model", type(model).__name__)
    run.command = command
    # The stages, in order; each named in every message written inside it. Those under the guard see the model
    # through the boundary (copies in, logits checked out); after each, the model must be as it was handed over.
    with run.guard.installed(), eval_mode(model, freeze_parameters=True), multihead.mode(model, "random"):
        run.state = ModelState(model)
        for name, stage_fn in GUARDED_STAGES:
            with stage(name):
                stage_fn(run)
                run.state.require_unchanged(model)
    for name, stage_fn in UNGUARDED_STAGES:
        with stage(name):
            stage_fn(run)
    return run.result


@dataclass
class ScoreRun:
    """What the stages of one score share: the inputs as checked, the model's boundary, what each stage found."""

    model: nn.Module
    parent: nn.Module | None
    full: Dataset  # S19 compares a manifest's accuracy on the whole set
    data: Dataset  # the engine's own copy of the scored examples: user code only ever sees copies of it
    fingerprint: str  # of `data` before anything ran, compared after everything
    battery: BatterySpec
    per_head: BatterySpec
    addition: dict[str, Any] | None  # the multi-head addition
    additions: list[dict[str, Any]]
    ctx: HealthContext
    guard: ModelGuard
    device: torch.device
    seed: int
    batch_size: int
    curve_spec: EpsCurveSpec | None
    escalation_budget: EscalationBudget | None
    checkpoint: dict[str, Any] | None
    efficiency: bool
    progress: bool
    certify: CertifySpec = field(default_factory=CertifySpec)
    architecture: str = ""
    command: list[str] | None = None
    state: ModelState | None = None
    contract: ModelContract | None = None
    checks: dict[str, CheckResult] = field(default_factory=dict)
    escalations: list[EscalationRecord] = field(default_factory=list)
    audit: AuditReport | None = None
    battery_robust: float = 0.0
    health_seconds: float = 0.0
    stage_errors: list[Finding] = field(default_factory=list)
    bounds: BoundsReport | None = None
    bounds_status: np.ndarray | None = None  # per example: wrong | broken | certified | proved | unknown
    result: ScoreResult | None = None


def prepare(
    model: nn.Module,
    data: Dataset | str | tuple,
    battery: BatterySpec | str,
    *,
    norm: str | None,
    eps: float | None,
    n: int | None,
    batch_size: int,
    seed: int,
    head_battery: BatterySpec | str | None,
    parent: nn.Module | None,
    reference_acc: float | None,
    checkpoint: dict[str, Any] | None,
    device: str | torch.device | None,
    eps_grid: list[float] | None,
    escalation_budget: EscalationBudget | None,
    progress: bool,
    efficiency: bool,
    certify: CertifySpec | str | dict[str, Any] | None = None,
) -> ScoreRun:
    """Every input checked and resolved before anything runs: the batteries (names, settings, bounds) before the
    data, the model and data moved to the device once, the engine's own copy of the examples taken."""
    for what, module in (("score", model), ("parent", parent)):
        if module is not None and not isinstance(module, nn.Module):
            raise UsageError(
                f"{what} needs a torch.nn.Module, got {type(module).__name__}: build one with "
                "robustprune.models.build_model(name, num_classes, input_shape)"
            )
    check_int(batch_size, "--batch-size", bound="batch_size")
    check_seed(seed)
    certify = CertifySpec.coerce(certify)
    if eps_grid is not None:
        eps_grid = check_eps_grid(eps_grid)
    battery_arg = battery
    battery = _as_battery(battery, norm, eps)
    per_head = battery if head_battery is None else _as_battery(head_battery, battery.threat.norm, battery.threat.eps)
    for spec in (battery, per_head):
        check_battery(spec)
    device = resolve_device(device) if device is not None else model_device(model)
    full = _as_data(data)
    if eps is None and isinstance(battery_arg, str) and battery.source.startswith("builtin:"):
        # a built-in battery's eps is the dataset's usual one, not whatever digits uses (config.eps.DATASET_EPS)
        eps = default_eps(full.input_shape, battery.threat.norm)
        battery = _as_battery(battery, None, eps)
        per_head = battery if head_battery is None else _as_battery(per_head, None, eps)
    data = full.subset(n)
    data = dataclasses.replace(data, x=data.x.to(device).clone(), y=data.y.to(device).clone())
    model.to(device)
    if parent is not None:
        parent.to(device)
    battery.threat.check_input_dim(int(np.prod(data.input_shape)))
    curve_spec = _curve_spec(battery, eps_grid)
    if curve_spec is not None:
        check_grid_fits(curve_spec.grid, battery.threat.norm, int(np.prod(data.input_shape)))
    for spec in (battery, per_head):
        check_battery(spec, data.num_classes)
    battery, addition = multihead.prepare(model, battery)  # multi-head: adaptive attack first
    ctx = HealthContext(
        model=model,
        x=data.x,
        y=data.y,
        num_classes=data.num_classes,
        battery=battery,
        seed=seed,
        batch_size=batch_size,
        parent=parent,
        reference_acc=reference_acc if reference_acc is not None else recorded_accuracy(checkpoint, full),
        randomized=addition is not None,  # a multi-head model in random mode is randomized even if S2 missed it
    )
    # as the factory or file returned it, not only as it is now
    ctx.cache["train_mode_modules"] = handed_in_train_mode(model)
    return ScoreRun(
        model=model,
        parent=parent,
        full=full,
        data=data,
        fingerprint=data.fingerprint(),
        battery=battery,
        per_head=per_head,
        addition=addition,
        additions=[addition] if addition is not None else [],
        ctx=ctx,
        guard=ModelGuard(model, data.num_classes),
        device=device,
        seed=seed,
        batch_size=batch_size,
        curve_spec=curve_spec,
        escalation_budget=escalation_budget,
        checkpoint=checkpoint,
        efficiency=efficiency,
        progress=progress,
        certify=certify,
    )


def _curve_spec(battery: BatterySpec, eps_grid: list[float] | None) -> EpsCurveSpec | None:
    """The battery's [eps_curve] table, its grid replaced by --eps-grid, or a default curve for --eps-grid alone."""
    spec = battery.eps_curve
    if eps_grid is None:
        return spec
    grid = tuple(eps_grid)
    return EpsCurveSpec(grid=grid) if spec is None else dataclasses.replace(spec, grid=grid)


# ---------------------------------------------------------------- the stages, in the order they run


def contract_stage(run: ScoreRun) -> None:
    """The model contract on two clean batches (exit 2 on a breach); a batch-dependent model is randomized."""
    torch.manual_seed(run.seed)
    run.contract = check_contract(run.model, run.guard, run.data.x, run.state)
    run.guard.contract_passed = True
    if run.contract.batch_independent is False:
        run.ctx.randomized = True
        run.ctx.cache["batch_difference"] = run.contract.batch_difference
    log.info(run.contract.line())


def model_checks_stage(run: ScoreRun) -> None:
    """The model checks, each isolated; what they find decides how the battery attacks (randomized: EOT first and
    verdicts over repeated passes; no gradient: a gradient-free attack added)."""
    started = time.perf_counter()
    ctx = run.ctx
    run.checks = check_model(ctx)
    if ctx.randomized and run.addition is None:
        addition = (
            BATCH_DEPENDENT if run.contract is not None and run.contract.batch_independent is False else RANDOMIZED
        )
        ctx.battery, record = addition.apply(ctx.battery)
        run.additions.append(record)
    if not ctx.gradients:
        ctx.battery, record = GRADIENT_FREE.apply(ctx.battery)
        run.additions += [record] if record["added"] else []
    ctx.n_passes = RANDOMIZED_PASSES if ctx.randomized else 1
    run.battery = ctx.battery
    run.health_seconds += time.perf_counter() - started
    log.info("model checks: %.1f s (randomized: %s, gradients: %s)", run.health_seconds, ctx.randomized, ctx.gradients)


def battery_stage(run: ScoreRun) -> None:
    """The battery: every attack on the still-unbroken examples, every adversarial example verified. A model or
    attack that fails here ends the run (exit 1): a battery with a hole in it has no number."""
    ctx, data = run.ctx, run.data
    started = time.perf_counter()
    ctx.outcome = run_battery(
        run.model,
        data.x,
        data.y,
        run.battery,
        num_classes=data.num_classes,
        seed=run.seed,
        batch_size=run.batch_size,
        n_passes=ctx.n_passes,
        progress=run.progress,
        gradients=ctx.gradients,
        parent=run.parent,
        bridged=ctx.bridged,
    )
    run.battery_robust = accuracy_with_ci(~ctx.outcome.broken)["value"]
    log.info(
        "battery %s: %d attacks on %d examples, robust %.2f %%, %.1f s",
        run.battery.name,
        len(run.battery.active_attacks()),
        len(data),
        run.battery_robust,
        time.perf_counter() - started,
    )


def audit_stage(run: ScoreRun) -> None:
    """The reference attack on a sample of the survivors (isolated: an audit that raises is a recorded error)."""
    if run.battery.audit is None:
        return
    ctx, data = run.ctx, run.data
    started = time.perf_counter()
    with isolated() as failed:
        ctx.outcome, run.audit = run_audit(
            run.model,
            data.x,
            data.y,
            run.battery,
            ctx.outcome,
            num_classes=data.num_classes,
            seed=run.seed,
            batch_size=run.batch_size,
            n_passes=ctx.n_passes,
            gradients=ctx.gradients,
        )
    if failed:
        run.audit = failed_audit(run.battery, ctx.outcome, failed.error or "failed", started)
        run.stage_errors.append(Finding("audit", failed.error or "failed"))
    log.info("audit: %s", run.audit.line())


def outcome_checks_stage(run: ScoreRun) -> None:
    """The outcome checks with their probes (each isolated), then the escalations they call for."""
    started = time.perf_counter()
    ctx = run.ctx
    run.checks = run.checks | check_outcome(ctx)
    run.escalations = before_battery(ctx, run.additions)
    finish_records(ctx, run.escalations)
    with stage("escalations"):
        run.escalations += escalate(ctx, run.checks, run.escalation_budget)
    run.health_seconds += time.perf_counter() - started
    log.info(
        "outcome checks and escalations: %.1f s, %d escalations", time.perf_counter() - started, len(run.escalations)
    )


def bounds_stage(run: ScoreRun) -> None:
    """The bracket (scoring/bounds.py; isolated: bounds that raise are a recorded error and certify nothing), then
    the checks that judge it (S24-S26)."""
    if run.certify.method != "none":
        ctx = run.ctx
        robust = accuracy_with_ci(~ctx.outcome.broken)["value"]
        with isolated() as failed:
            run.bounds, run.bounds_status = compute_bounds(ctx, run.certify, multi_head=run.addition is not None)
        if failed:
            run.bounds = BoundsReport.not_computed(run.certify.method, robust, failed.error or "failed", error=True)
            run.bounds_status = None
            run.stage_errors.append(Finding("bounds", failed.error or "failed"))
        elif run.bounds.skipped and run.certify.method != "auto":
            log.warning("no certified bound: %s", run.bounds.skipped)
        run.ctx.cache["bounds"] = run.bounds
    for check in ordered_checks("bounds"):
        run.checks[check.id] = guarded(check, lambda check=check: check.evaluate(run.ctx), "bounds")


def result_stage(run: ScoreRun) -> None:
    """The verdict by its rule, then the typed result: every aggregate from the per-sample table, read from the
    engine's own examples."""
    ctx, data, battery = run.ctx, run.data, run.battery
    stages = ordered_checks("model") + ordered_checks("outcome") + ordered_checks("bounds")
    ordered = [run.checks[c.id] for c in stages if c.id in run.checks]
    verdict, reasons = derive_verdict(ordered, run.escalations, run.audit)
    health = HealthReport(
        verdict=verdict,
        reasons=reasons,
        checks=ordered,
        escalations=run.escalations,
        battery_robust_acc=run.battery_robust,
        seconds=run.health_seconds,
        rule=RULE,
    )
    warnings = [Finding(c.id, c.message) for c in ordered if c.status in ("warn", "fail", "error")]
    sparsity = None
    with isolated("sparsity") as failed:
        sparsity = SparsitySummary.from_json(sparsity_report(run.model, data.input_shape))
    if failed:  # e.g. a TorchScript module exposes no nn.Linear / nn.Conv layers
        warnings.append(Finding("sparsity", f"sparsity not measured: {failed.error}"))
    provenance = Provenance.from_json(collect(seed=run.seed, command=run.command, device=run.device))
    provenance.checkpoint = CheckpointRecord.from_json(run.checkpoint) if run.checkpoint else None
    provenance.batch_size = run.batch_size
    provenance.battery = battery
    provenance.battery_additions = run.additions or None
    result = build_result(
        ctx.outcome,
        data,
        battery,
        sparsity=sparsity,
        warnings=warnings,
        randomized=ctx.randomized,
        n_passes=ctx.n_passes,
        architecture=run.architecture,
        provenance=provenance,
        health=health,
        fingerprint=run.fingerprint,
    )
    result.audit = run.audit
    result.bounds = run.bounds
    if run.bounds_status is not None and result.per_sample is not None:
        result.per_sample.status = run.bounds_status.astype(str)
    result.model_contract = run.contract
    result.adversarial = adversarial_examples(ctx.outcome, data, battery)
    run.result = result


def eps_curve_stage(run: ScoreRun) -> None:
    """Robust accuracy vs eps from the minimum-norm attacks and the battery's points (isolated)."""
    result, spec = run.result, run.curve_spec
    if spec is None:
        return
    if not run.ctx.gradients:
        result.eps_curve_skipped = (
            "the model gives no usable gradient and the minimum-norm attacks (FMN, FAB) need one; "
            "a curve from them would show robustness that is not there"
        )
        log.warning(result.eps_curve_skipped)
        return
    adversarial = result.adversarial
    known = (
        KnownPoints("battery", adversarial.index, torch.as_tensor(adversarial.x)) if adversarial is not None else None
    )
    with isolated() as failed:
        curve = min_norm_curve(
            run.model,
            run.data,
            run.battery.threat.norm,
            list(spec.grid),
            attacks=spec.attacks,
            steps=spec.steps,
            seed=run.seed,
            batch_size=run.batch_size,
            n_passes=run.ctx.n_passes,
            known=known,
            clean_correct=np.asarray(run.ctx.outcome.clean.correct, dtype=bool),
        )
    if failed:
        result.eps_curve_skipped = f"the eps curve could not be computed: {failed.error}"
        run.stage_errors.append(Finding("eps curve", failed.error or "failed"))
        log.warning(result.eps_curve_skipped)
        return
    if result.verdict not in (None, "trusted"):
        curve.caveat = (
            f"the evaluation is {result.verdict} (see its alerts); these gradient-based distances inherit the same "
            "doubt and may be far too large"
        )
    network = run.ctx.cache.get("verified_network")
    if network is not None:  # the bounds ran: the lower curve beside the upper one (CROWN at every eps)
        with isolated() as failed:
            curve.certified_acc, curve.certified_skipped = certified_curve(
                network, run.data.x, run.data.y, np.asarray(run.ctx.outcome.clean.correct, bool), curve.norm, curve.grid
            )
        if failed:
            curve.certified_skipped = f"the lower curve could not be computed: {failed.error}"
    result.eps_curve = curve
    result.cost.seconds += curve.seconds
    result.cost.n_forward += curve.n_forward
    result.cost.n_backward += curve.n_backward
    log.info("%s (%.1f s)", curve.line(), curve.seconds)


def multi_head_stage(run: ScoreRun) -> None:
    """Per-head accuracy of a multi-head randomized defense (isolated)."""
    if run.addition is None:
        return
    result = run.result
    started = time.perf_counter()
    with isolated() as failed:
        report = multihead.multihead_report(
            run.model, run.data, run.per_head, seed=run.seed, batch_size=run.batch_size, random_mode_battery=run.battery
        )
    if failed:
        run.stage_errors.append(Finding("multi-head report", failed.error or "failed"))
        return
    result.multi_head = MultiHeadReport.from_json(report | {"seconds": time.perf_counter() - started})
    # the per-head runs are part of the cost
    result.cost.seconds += result.multi_head.seconds
    result.cost.n_forward += result.multi_head.n_forward
    result.cost.n_backward += result.multi_head.n_backward


def efficiency_stage(run: ScoreRun) -> None:
    """Params, MACs and latency as given vs compacted (isolated; outside the guard: it copies the model)."""
    if not run.efficiency:
        return
    started = time.perf_counter()
    with isolated() as failed:
        run.result.efficiency = measure_efficiency(run.model, tuple(run.data.input_shape), seed=run.seed)
    if failed:
        run.result.efficiency = EfficiencyReport(
            params=0, params_nonzero=0, macs=None, macs_effective=None, skipped=f"error: {failed.error}"
        )
        run.stage_errors.append(Finding("efficiency", failed.error or "failed"))
    log.info("%s (%.1f s)", run.result.efficiency.line(), time.perf_counter() - started)


def integrity_stage(run: ScoreRun) -> None:
    """The engine's own examples are what they were before anything ran (user code only ever saw copies), and
    every stage error is on the result."""
    if run.data.fingerprint() != run.fingerprint:
        raise VerificationError(
            "the scored examples changed during the run although user code only received copies of them; nothing is "
            "written (please report this)"
        )
    run.result.stage_errors = run.stage_errors or None
    run.result.warnings += [Finding(f.check, f"{f.check} could not run: {f.message}") for f in run.stage_errors]


GUARDED_STAGES: tuple[tuple[str, Callable[[ScoreRun], None]], ...] = (
    ("model contract", contract_stage),
    ("model checks", model_checks_stage),
    ("battery", battery_stage),
    ("audit", audit_stage),
    ("outcome checks", outcome_checks_stage),
    ("bounds", bounds_stage),
    ("result", result_stage),
    ("eps curve", eps_curve_stage),
    ("multi-head report", multi_head_stage),
)
UNGUARDED_STAGES: tuple[tuple[str, Callable[[ScoreRun], None]], ...] = (
    ("efficiency", efficiency_stage),
    ("integrity", integrity_stage),
)


def adversarial_examples(outcome: BatteryOutcome, data: Dataset, battery: BatterySpec) -> AdversarialExamples:
    """The broken examples of `outcome` (see AdversarialExamples), the first breaking attack named per example."""
    clean_ok = np.asarray(outcome.clean.correct, dtype=bool)
    broken = np.asarray(outcome.broken, dtype=bool) & clean_ok
    first = np.full(len(broken), "", dtype=object)
    for label, columns in outcome.columns.items():  # insertion order: battery, probes, escalations, audit
        hit = np.asarray(columns.broken, dtype=bool) & (first == "")
        first[hit] = label
    index = np.flatnonzero(broken)
    x_adv = outcome.worst_x.detach()[torch.as_tensor(index, dtype=torch.long, device=outcome.worst_x.device)]
    x_clean = data.x.detach()[torch.as_tensor(index, dtype=torch.long, device=data.x.device)]
    preds = [columns.adv_pred for columns in outcome.columns.values()]
    pred = np.full(len(index), -1, dtype=np.int64)
    for row, i in enumerate(index):
        for label, column in zip(outcome.columns, preds, strict=True):
            if label == first[i]:
                pred[row] = int(column[i])
                break
    return AdversarialExamples(
        index=index.astype(np.int64),
        label=data.y.detach().cpu().numpy()[index].astype(np.int64),
        x=x_adv.cpu().float().numpy(),
        x_clean=x_clean.cpu().float().numpy(),
        pred=pred,
        attack=first[index].astype(str),
        norm=battery.threat.norm,
        eps=float(battery.threat.eps),
    )


def build_result(
    outcome: BatteryOutcome,
    data: Dataset,
    battery: BatterySpec,
    *,
    sparsity: SparsitySummary | None,
    warnings: list[Finding],
    randomized: bool,
    n_passes: int,
    architecture: str,
    provenance: Provenance,
    health: HealthReport | None = None,
    fingerprint: str | None = None,
) -> ScoreResult:
    """The typed result of a battery run (with its probes and escalations): every aggregate derived from the
    per-sample table."""
    clean = accuracy_with_ci(outcome.clean.correct)
    robust = accuracy_with_ci(~outcome.broken)
    attacks = []
    broken_so_far = ~outcome.clean.correct
    for record in outcome.records:
        broken_so_far = broken_so_far | outcome.columns[record.label].broken
        after = accuracy_with_ci(~broken_so_far)
        attacks.append(
            AttackEntry.from_json(
                record.description
                | {
                    "n_attempted": record.n_attempted,
                    "n_broken": record.n_broken,
                    "robust_acc": after["value"],
                    "robust_acc_ci": after["ci"],
                    "seconds": record.seconds,
                    "n_forward": record.n_forward,
                    "n_backward": record.n_backward,
                    "flags": record.flags,
                    "skipped": record.skipped,
                    "role": record.role,
                }
            )
        )
    warnings = warnings + [Finding("autoattack", flag) for record in outcome.records for flag in record.flags]
    # autoattack_acc is the reference AutoAttack's number alone: the battery ran it and nothing else, on a
    # randomized model only its 'rand' version counts (the adapter switches to it; checked again here), and never
    # from an evaluation the verdict calls untrusted.
    own = [a for a in attacks if a.role == "battery"]
    is_reference_aa = (
        [(a.name, a.skipped) for a in own] == [("autoattack", None)]
        and (not randomized or own[0].settings.get("version") == "rand")
        and (health is None or health.verdict != "untrusted")
    )
    labels = data.y.cpu().numpy()
    return ScoreResult(
        schema_version=SCHEMA_VERSION,
        kind="score",
        dataset=data.name,
        architecture=architecture,
        threat_model=battery.threat.norm,
        norm=battery.threat.norm,
        eps=battery.threat.eps,
        n_examples=len(data),
        num_classes=data.num_classes,
        clean_acc=clean["value"],
        clean_acc_ci=clean["ci"],
        robust_acc=robust["value"],
        robust_acc_ci=robust["ci"],
        autoattack_acc=own[0].robust_acc if is_reference_aa else None,
        ci_method=clean["ci_method"],
        ci_confidence=clean["confidence"],
        battery=battery.name,
        attacks=attacks,
        randomized=randomized,
        n_eval_passes=n_passes,
        calibration=Calibration(
            clean=CalibrationSummary.from_json(calibration_summary(outcome.clean.probs, labels)),
            adversarial=CalibrationSummary.from_json(calibration_summary(outcome.worst_probs, labels)),
        ),
        sparsity=sparsity,
        warnings=warnings,
        alerts=_alerts(attacks, health),
        health=health,
        verdict=health.verdict if health is not None else None,
        cost=Cost(
            seconds=sum(a.seconds for a in attacks),
            n_forward=sum(a.n_forward for a in attacks),
            n_backward=sum(a.n_backward for a in attacks),
        ),
        data=DataInfo(
            source=data.source,
            split=data.split,
            fingerprint=fingerprint or data.fingerprint(),
            input_shape=list(data.input_shape),
        ),
        per_sample=PerSampleTable(
            index=np.arange(len(labels)),
            label=labels.astype(np.int64),
            clean_pred=outcome.clean.pred,
            clean_conf=outcome.clean.conf,
            clean_correct=outcome.clean.correct,
            broken=outcome.broken,
            attacks=dict(outcome.columns),
        ),
        provenance=provenance,
        clean_probs=outcome.clean.probs,
        adversarial_probs=outcome.worst_probs,
    )


def _alerts(attacks: list[AttackEntry], health: HealthReport | None) -> list[Finding]:
    """What a reader must see before the numbers: findings that make the robust accuracy an upper bound."""
    alerts = []
    if health is not None and health.verdict == "untrusted":
        reasons = "; ".join(health.reasons[:3])
        bound = "" if "upper bound" in reasons else ". The robust accuracy is an upper bound that may be loose"
        alerts.append(
            Finding("verdict", f"UNTRUSTED EVALUATION: {reasons}{bound}; see the health checks for how to fix it")
        )
    # only attacks skipped for want of a gradient (an attack may also step aside on a randomized model)
    skipped = [a.label for a in attacks if a.skipped and a.skipped.startswith(NO_GRADIENT) and a.role == "battery"]
    if not skipped:
        return alerts
    ran = [a.label for a in attacks if not a.skipped and a.n_attempted]
    return alerts + [
        Finding(
            "S6",
            f"GRADIENT ATTACKS COULD NOT RUN: no gradient reaches the input, so {', '.join(skipped)} "
            f"{'was' if len(skipped) == 1 else 'were'} skipped; the robust accuracy comes from "
            f"{', '.join(ran) or 'no attack'} alone and is an upper bound that may be loose. Remove the "
            "detach / no_grad / non-differentiable step from the forward pass, or give it a "
            "differentiable approximation (BPDA), to evaluate it with gradient attacks",
        )
    ]
