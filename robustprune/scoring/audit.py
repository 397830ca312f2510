"""The audit: the reference attack (AutoAttack) on a seeded random sample of what the battery left unbroken.

A fast battery is only worth its speed if it misses nothing the reference finds. Every run checks that on a
sample: the reference attacks `fraction` of the survivors; an example it breaks counts as broken (the result is
the union of both), turns the verdict to caution, and grows the sample (`grow`-fold, up to `max_rounds` rounds).
From the pooled counts, a Clopper-Pearson 95 % interval on the share of survivors the reference would break
bounds the battery's gap to the reference in points of robust accuracy. (The rounds are adaptive, so after a
miss the pooled interval is an approximation; with no miss it is exact.)
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
from scipy.stats import binomtest
from torch import nn

from robustprune.attacks.base import ATTACKS
from robustprune.attacks.battery import BatteryOutcome, run_battery
from robustprune.config import AuditSpec, BatterySpec
from robustprune.scoring.result import AuditReport

CONFIDENCE = 0.95


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided exact binomial interval for k successes in n trials ((0, 1) when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    interval = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def audit_battery(battery: BatterySpec, num_classes: int) -> BatterySpec:
    """The audit attack as a one-attack battery under the same threat model. An attack that takes a number of
    target classes is capped at the num_classes - 1 there are (AutoAttack's 9 needs 10 classes)."""
    audit = battery.audit
    assert audit is not None
    params = dict(audit.params)
    defaults = ATTACKS.get(audit.attack).defaults
    if "n_target_classes" in defaults and "n_target_classes" not in params:
        params["n_target_classes"] = min(int(defaults["n_target_classes"]), num_classes - 1)
    spec = replace(audit.attack_spec(), params=params)
    return BatterySpec(name=f"{battery.name}-audit", threat=battery.threat, attacks=(spec,))


def run_audit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    battery: BatterySpec,
    outcome: BatteryOutcome,
    *,
    num_classes: int,
    seed: int,
    batch_size: int,
    n_passes: int = 1,
    gradients: bool = True,
) -> tuple[BatteryOutcome, AuditReport]:
    """Audit `outcome` (the battery's) and return it with the audit's breaks added, and the audit's report."""
    audit: AuditSpec = battery.audit  # type: ignore[assignment]
    started = time.perf_counter()
    reference = audit_battery(battery, num_classes)
    survivors = np.flatnonzero(~outcome.broken)
    spec = reference.attacks[0]
    needs = ATTACKS.get(spec.name)(spec, reference.threat, None).required_classes()
    if num_classes < needs:
        return outcome, _report(
            audit,
            survivors,
            [],
            0,
            0,
            len(outcome.broken),
            started,
            f"the data has {num_classes} classes; {audit.attack} needs at least {needs}",
        )
    order = np.random.default_rng([seed & 0xFFFFFFFF, 0xA0D1]).permutation(survivors)
    size, done, rounds, skipped = audit.first_size(len(survivors)), 0, 0, None
    missed: list[int] = []
    while done < size:
        rounds += 1
        sample = np.sort(order[done:size])
        label = _free_label("audit" if rounds == 1 else f"audit-{rounds}", outcome.columns)
        this_round = replace(reference, attacks=(replace(reference.attacks[0], label=label),))
        outcome = run_battery(
            model,
            x,
            y,
            this_round,
            num_classes=num_classes,
            seed=seed,
            batch_size=batch_size,
            n_passes=n_passes,
            gradients=gradients,
            continue_from=outcome,
            only=sample,
            role="audit",
        )
        if outcome.records[-1].skipped:
            skipped = outcome.records[-1].skipped
            break
        new = sample[outcome.columns[label].broken[sample]]
        missed += new.tolist()
        done = size
        if len(new) and rounds < audit.max_rounds:
            size = audit.next_size(size, len(survivors))
    audited = int(done)
    return outcome, _report(audit, survivors, missed, audited, rounds, len(outcome.broken), started, skipped, order)


def _free_label(label: str, taken: dict[str, object]) -> str:
    """`label`, suffixed when a battery attack already uses it (each label names one per-sample column)."""
    candidate, n = label, 1
    while candidate in taken:
        candidate, n = f"{label}_{n}", n + 1
    return candidate


def _report(
    audit: AuditSpec,
    survivors: np.ndarray,
    missed: list[int],
    audited: int,
    rounds: int,
    n: int,
    started: float,
    skipped: str | None,
    order: np.ndarray | None = None,
) -> AuditReport:
    high = clopper_pearson(len(missed), audited)[1]
    share = len(survivors) / n if n else 0.0
    return AuditReport(
        attack=audit.attack,
        n_survivors=len(survivors),
        n_audited=audited,
        n_broken=len(missed),
        broken_index=sorted(int(i) for i in missed),
        rounds=rounds,
        fraction=audit.fraction,
        gap_points=100.0 * (len(missed) / audited if audited else 0.0) * share,
        gap_upper_points=100.0 * high * share,
        confidence=CONFIDENCE,
        seconds=time.perf_counter() - started,
        skipped=skipped,
        sample_index=sorted(int(i) for i in order[:audited]) if order is not None else [],
    )


def failed_audit(battery: BatterySpec, outcome: BatteryOutcome, error: str, started: float) -> AuditReport:
    """The report of an audit that raised: nothing audited, the gap bound as wide as the survivors allow."""
    audit: AuditSpec = battery.audit  # type: ignore[assignment]
    survivors = np.flatnonzero(~outcome.broken)
    report = _report(audit, survivors, [], 0, 0, len(outcome.broken), started, None)
    report.error = error
    return report
