"""`score`: one model, one dataset, one threat model, one battery -> a result people and CI can trust."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from robustprune.attacks.battery import BatteryOutcome, check_battery, load_battery, run_battery
from robustprune.config import BatterySpec, ThreatModel
from robustprune.data import Dataset, as_dataset, load_dataset
from robustprune.errors import UsageError
from robustprune.metrics import accuracy_with_ci, calibration_summary
from robustprune.models.modes import eval_mode, handed_in_train_mode, mode_matters
from robustprune.provenance import collect
from robustprune.scoring import multihead
from robustprune.scoring.additions import GRADIENT_FREE, RANDOMIZED
from robustprune.scoring.per_sample import PerSampleTable
from robustprune.scoring.result import (
    SCHEMA_VERSION,
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
from robustprune.scoring.sanity import check_determinism, check_gradients, check_probability_output
from robustprune.sparsity import sparsity_report
from robustprune.validation import check_int, check_seed

RANDOMIZED_PASSES = 10  # verdicts on a randomized model: correct only if correct on every one of these passes


def _as_data(data: Dataset | str | tuple, n: int | None) -> Dataset:
    if isinstance(data, str):
        data = load_dataset(data, split="test")
    elif isinstance(data, tuple):
        data = as_dataset(*data)
    return data.subset(n)


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


@dataclass(frozen=True)
class Sanity:
    findings: list[Finding]
    randomized: bool  # S2: the forward pass is not deterministic
    gradients: bool  # False when S6 found no gradient reaching the input


def _sanity(model: nn.Module, data: Dataset, batch_size: int) -> Sanity:
    x, y = data.x[:batch_size], data.y[:batch_size]
    findings: list[Finding] = []
    with torch.no_grad():
        logits = model(x)
    if logits.ndim != 2 or logits.shape[1] != data.num_classes:
        raise UsageError(
            f"the model outputs shape {tuple(logits.shape)} for {len(x)} examples but the data has "
            f"{data.num_classes} classes; it must return (N, {data.num_classes}) logits"
        )
    for finding in (check_probability_output(logits), check_determinism(model, x)):
        if finding:
            findings.append(finding)
    randomized = any(f.check == "S2" for f in findings)
    gradient = check_gradients(model, x, y)
    # The zero-gradient share (S7) of one noisy pass says little about a randomized model; a cut graph (S6) does.
    if gradient and (gradient.check == "S6" or not randomized):
        findings.append(gradient)
    return Sanity(findings, randomized, gradients=not (gradient and gradient.check == "S6"))


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
) -> ScoreResult:
    """Score `model` on `data` under `battery`.

    Args:
        data: a Dataset, "digits" or a path (its test split), or an (x, y) pair of tensors/arrays.
        battery: a BatterySpec, a battery name ("standard") or a TOML path; `norm`/`eps` override its threat model.
        n: score the first n examples (all when None).
        checkpoint: the CheckpointInfo dict of the weights, recorded in the provenance.
        head_battery: for multi-head (DIO) models, the battery run against each head in fixed mode for the
            per-head report (default: `battery`); it gets the same threat model and its name is recorded.
    """
    # Every input is checked before anything runs: the batteries (names, settings, bounds) before the data.
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"score needs a torch.nn.Module, got {type(model).__name__}: build one with "
            "robustprune.models.build_model(name, num_classes, input_shape)"
        )
    check_int(batch_size, "--batch-size", bound="batch_size")
    check_seed(seed)
    battery = _as_battery(battery, norm, eps)
    per_head = battery if head_battery is None else _as_battery(head_battery, battery.threat.norm, battery.threat.eps)
    for spec in (battery, per_head):
        check_battery(spec)
    data = _as_data(data, n)
    battery.threat.check_input_dim(int(np.prod(data.input_shape)))
    for spec in (battery, per_head):
        check_battery(spec, data.num_classes)
    battery, addition = multihead.prepare(model, battery)  # multi-head: adaptive attack first
    additions = [addition] if addition is not None else []
    warnings: list[Finding] = []
    in_train_mode = handed_in_train_mode(model)  # as the factory or file returned it, not only as it is now
    if in_train_mode and mode_matters(model, in_train_mode):
        shown = ", ".join(in_train_mode[:3]) + (f" and {len(in_train_mode) - 3} more" if len(in_train_mode) > 3 else "")
        warnings.append(
            Finding(
                "S3",
                f"the model was handed over in train mode ({shown}) and its output depends on the mode "
                "(BatchNorm, Dropout or similar); it was scored in eval mode: if it is deployed in train mode, "
                "this number does not describe it",
            )
        )
    torch.manual_seed(seed)
    with eval_mode(model, freeze_parameters=True), multihead.mode(model, "random"):
        sanity = _sanity(model, data, batch_size)
        # A multi-head model in random mode is randomized even if S2 happened to miss it.
        randomized = sanity.randomized or addition is not None
        warnings += sanity.findings
        if randomized and addition is None:
            battery, record = RANDOMIZED.apply(battery)
            additions.append(record)
        if not sanity.gradients:
            battery, record = GRADIENT_FREE.apply(battery)
            additions += [record] if record["added"] else []
        n_passes = RANDOMIZED_PASSES if randomized else 1
        outcome = run_battery(
            model,
            data.x,
            data.y,
            battery,
            num_classes=data.num_classes,
            seed=seed,
            batch_size=batch_size,
            n_passes=n_passes,
            progress=progress,
            gradients=sanity.gradients,
        )
    try:
        sparsity = SparsitySummary.from_json(sparsity_report(model, data.input_shape))
    except UsageError as exc:  # e.g. a TorchScript module exposes no nn.Linear / nn.Conv layers
        sparsity = None
        warnings.append(Finding("sparsity", f"sparsity not measured: {exc}"))
    provenance = Provenance.from_json(collect(seed=seed, command=command, device=str(data.x.device)))
    provenance.checkpoint = CheckpointRecord.from_json(checkpoint) if checkpoint else None
    provenance.batch_size = batch_size
    provenance.battery = battery
    provenance.battery_additions = additions or None
    result = build_result(
        outcome,
        data,
        battery,
        sparsity=sparsity,
        warnings=warnings,
        randomized=randomized,
        n_passes=n_passes,
        architecture=architecture or getattr(model, "robustprune_model", type(model).__name__),
        provenance=provenance,
    )
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
) -> ScoreResult:
    """The typed result of a battery run: every aggregate derived from the per-sample table."""
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
                }
            )
        )
    warnings = warnings + [Finding("autoattack", flag) for record in outcome.records for flag in record.flags]
    # autoattack_acc is the reference AutoAttack's number alone: the battery ran it and nothing else, and on a
    # randomized model only its 'rand' version counts (the adapter switches to it; checked again here).
    is_reference_aa = [(a.name, a.skipped) for a in attacks] == [("autoattack", None)] and (
        not randomized or attacks[0].settings.get("version") == "rand"
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
        autoattack_acc=robust["value"] if is_reference_aa else None,
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
        alerts=_alerts(attacks),
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


def _alerts(attacks: list[AttackEntry]) -> list[Finding]:
    """What a reader must see before the numbers: findings that make the robust accuracy an upper bound."""
    skipped = [a.label for a in attacks if a.skipped]
    if not skipped:
        return []
    ran = [a.label for a in attacks if not a.skipped]
    return [
        Finding(
            "S6",
            f"GRADIENT ATTACKS COULD NOT RUN: no gradient reaches the input, so {', '.join(skipped)} "
            f"{'was' if len(skipped) == 1 else 'were'} skipped; the robust accuracy comes from "
            f"{', '.join(ran) or 'no attack'} alone and is an upper bound that may be loose. Remove the "
            "detach / no_grad / non-differentiable step from the forward pass, or give it a "
            "differentiable approximation (BPDA), to evaluate it with gradient attacks",
        )
    ]
