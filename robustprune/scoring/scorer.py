"""`score`: one model, one dataset, one threat model, one battery -> a result people and CI can trust."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from robustprune.attacks.base import NO_GRADIENT
from robustprune.attacks.battery import BatteryOutcome, check_battery, load_battery, run_battery
from robustprune.config import BatterySpec, ThreatModel
from robustprune.config.battery import EpsCurveSpec
from robustprune.config.eps import default_eps
from robustprune.data import Dataset, as_dataset, load_dataset
from robustprune.devices import model_device, resolve_device
from robustprune.errors import UsageError
from robustprune.metrics import accuracy_with_ci, calibration_summary
from robustprune.models.modes import eval_mode, handed_in_train_mode
from robustprune.provenance import collect
from robustprune.scoring import multihead
from robustprune.scoring.additions import GRADIENT_FREE, RANDOMIZED
from robustprune.scoring.audit import run_audit
from robustprune.scoring.efficiency import measure_efficiency
from robustprune.scoring.eps_curve import KnownPoints, check_eps_grid, min_norm_curve
from robustprune.scoring.escalation import EscalationBudget, before_battery, escalate, finish_records
from robustprune.scoring.health import HealthContext, HealthReport, check_model, check_outcome, ordered_checks
from robustprune.scoring.per_sample import PerSampleTable
from robustprune.scoring.result import (
    SCHEMA_VERSION,
    AdversarialExamples,
    AttackEntry,
    Calibration,
    CalibrationSummary,
    CheckpointRecord,
    Cost,
    DataInfo,
    Finding,
    MultiHeadReport,
    Provenance,
    ScoreResult,
    SparsitySummary,
)
from robustprune.scoring.verdict import RULE, derive_verdict
from robustprune.sparsity import sparsity_report
from robustprune.validation import check_int, check_seed

RANDOMIZED_PASSES = 10  # verdicts on a randomized model: correct only if correct on every one of these passes


log = logging.getLogger("robustprune.scoring")


def _as_data(data: Dataset | str | tuple) -> Dataset:
    if isinstance(data, str):
        return load_dataset(data, split="test")
    if isinstance(data, tuple):
        return as_dataset(*data)
    return data


def _as_battery(battery: BatterySpec | str, norm: str | None, eps: float | None) -> BatterySpec:
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


def _check_output_shape(model: nn.Module, data: Dataset, batch_size: int) -> None:
    with torch.no_grad():
        logits = model(data.x[:batch_size])
    if logits.ndim != 2 or logits.shape[1] != data.num_classes:
        raise UsageError(
            f"the model outputs shape {tuple(logits.shape)} for {min(batch_size, len(data))} examples but the data "
            f"has {data.num_classes} classes; it must return (N, {data.num_classes}) logits"
        )


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
    """
    # Every input is checked before anything runs: the batteries (names, settings, bounds) before the data.
    for what, module in (("score", model), ("parent", parent)):
        if module is not None and not isinstance(module, nn.Module):
            raise UsageError(
                f"{what} needs a torch.nn.Module, got {type(module).__name__}: build one with "
                "robustprune.models.build_model(name, num_classes, input_shape)"
            )
    check_int(batch_size, "--batch-size", bound="batch_size")
    check_seed(seed)
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
    data = dataclasses.replace(data, x=data.x.to(device), y=data.y.to(device))
    model.to(device)
    if parent is not None:
        parent.to(device)
    battery.threat.check_input_dim(int(np.prod(data.input_shape)))
    for spec in (battery, per_head):
        check_battery(spec, data.num_classes)
    battery, addition = multihead.prepare(model, battery)  # multi-head: adaptive attack first
    additions = [addition] if addition is not None else []
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
    torch.manual_seed(seed)
    with eval_mode(model, freeze_parameters=True), multihead.mode(model, "random"):
        started = time.perf_counter()
        _check_output_shape(model, data, batch_size)
        model_checks = check_model(ctx)
        randomized = ctx.randomized
        if randomized and addition is None:
            battery, record = RANDOMIZED.apply(battery)
            additions.append(record)
        if not ctx.gradients:
            battery, record = GRADIENT_FREE.apply(battery)
            additions += [record] if record["added"] else []
        ctx.battery, ctx.n_passes = battery, RANDOMIZED_PASSES if randomized else 1
        health_seconds = time.perf_counter() - started
        log.info("model checks: %.1f s (randomized: %s, gradients: %s)", health_seconds, randomized, ctx.gradients)
        started_battery = time.perf_counter()
        ctx.outcome = run_battery(
            model,
            data.x,
            data.y,
            battery,
            num_classes=data.num_classes,
            seed=seed,
            batch_size=batch_size,
            n_passes=ctx.n_passes,
            progress=progress,
            gradients=ctx.gradients,
            parent=parent,
        )
        battery_robust = 100.0 * float((~ctx.outcome.broken).mean())
        log.info(
            "battery %s: %d attacks on %d examples, robust %.2f %%, %.1f s",
            battery.name,
            len(battery.active_attacks()),
            len(data),
            battery_robust,
            time.perf_counter() - started_battery,
        )
        audit = None
        if battery.audit is not None:
            ctx.outcome, audit = run_audit(
                model,
                data.x,
                data.y,
                battery,
                ctx.outcome,
                num_classes=data.num_classes,
                seed=seed,
                batch_size=batch_size,
                n_passes=ctx.n_passes,
                gradients=ctx.gradients,
            )
        started = time.perf_counter()
        checks = model_checks | check_outcome(ctx)
        escalations = before_battery(ctx, additions)
        finish_records(ctx, escalations)
        escalations += escalate(ctx, checks, escalation_budget)
        health_seconds += time.perf_counter() - started
        if audit is not None:
            log.info("audit: %s", audit.line())
        log.info(
            "outcome checks and escalations: %.1f s, %d escalations", time.perf_counter() - started, len(escalations)
        )
    ordered = [checks[c.id] for c in ordered_checks("model") + ordered_checks("outcome") if c.id in checks]
    verdict, reasons = derive_verdict(ordered, escalations, audit)
    health = HealthReport(
        verdict=verdict,
        reasons=reasons,
        checks=ordered,
        escalations=escalations,
        battery_robust_acc=battery_robust,
        seconds=health_seconds,
        rule=RULE,
    )
    warnings = [Finding(c.id, c.message) for c in ordered if c.status in ("warn", "fail")]
    try:
        sparsity = SparsitySummary.from_json(sparsity_report(model, data.input_shape))
    except UsageError as exc:  # e.g. a TorchScript module exposes no nn.Linear / nn.Conv layers
        sparsity = None
        warnings.append(Finding("sparsity", f"sparsity not measured: {exc}"))
    provenance = Provenance.from_json(collect(seed=seed, command=command, device=device))
    provenance.checkpoint = CheckpointRecord.from_json(checkpoint) if checkpoint else None
    provenance.batch_size = batch_size
    provenance.battery = battery
    provenance.battery_additions = additions or None
    result = build_result(
        ctx.outcome,
        data,
        battery,
        sparsity=sparsity,
        warnings=warnings,
        randomized=randomized,
        n_passes=ctx.n_passes,
        architecture=architecture or getattr(model, "robustprune_model", type(model).__name__),
        provenance=provenance,
        health=health,
    )
    result.audit = audit
    result.adversarial = adversarial_examples(ctx.outcome, data, battery)
    if efficiency:
        started = time.perf_counter()
        result.efficiency = measure_efficiency(model, tuple(data.input_shape), seed=seed)
        log.info("%s (%.1f s)", result.efficiency.line(), time.perf_counter() - started)
    curve_spec = battery.eps_curve  # --eps-grid replaces its grid, or asks for a curve with the default attacks
    if eps_grid is not None:
        grid = tuple(eps_grid)
        curve_spec = EpsCurveSpec(grid=grid) if curve_spec is None else dataclasses.replace(curve_spec, grid=grid)
    if curve_spec is not None and not ctx.gradients:
        result.eps_curve_skipped = (
            "the model gives no usable gradient and the minimum-norm attacks (FMN, FAB) need one; "
            "a curve from them would show robustness that is not there"
        )
        log.warning(result.eps_curve_skipped)
    elif curve_spec is not None:
        adversarial = result.adversarial
        known = (
            KnownPoints("battery", adversarial.index, torch.as_tensor(adversarial.x))
            if adversarial is not None
            else None
        )
        with eval_mode(model, freeze_parameters=True), multihead.mode(model, "random"):
            result.eps_curve = min_norm_curve(
                model,
                data,
                battery.threat.norm,
                list(curve_spec.grid),
                attacks=curve_spec.attacks,
                steps=curve_spec.steps,
                seed=seed,
                batch_size=batch_size,
                n_passes=ctx.n_passes,
                known=known,
                clean_correct=np.asarray(ctx.outcome.clean.correct, dtype=bool),
            )
        if result.verdict not in (None, "trusted"):
            result.eps_curve.caveat = (
                f"the evaluation is {result.verdict} (see its alerts); these gradient-based distances inherit the same "
                "doubt and may be far too large"
            )
        result.cost.seconds += result.eps_curve.seconds
        result.cost.n_forward += result.eps_curve.n_forward
        result.cost.n_backward += result.eps_curve.n_backward
        log.info("%s (%.1f s)", result.eps_curve.line(), result.eps_curve.seconds)
    if addition is not None:
        started = time.perf_counter()
        report = multihead.multihead_report(
            model, data, per_head, seed=seed, batch_size=batch_size, random_mode_battery=battery
        )
        result.multi_head = MultiHeadReport.from_json(report | {"seconds": time.perf_counter() - started})
        # the per-head runs are part of the cost
        result.cost.seconds += result.multi_head.seconds
        result.cost.n_forward += result.multi_head.n_forward
        result.cost.n_backward += result.multi_head.n_backward
    return result


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
            source=data.source, split=data.split, fingerprint=data.fingerprint(), input_shape=list(data.input_shape)
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
