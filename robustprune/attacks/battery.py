"""The battery engine: run attacks in order on the still-unbroken examples and keep a per-sample worst case.

Every adversarial example is verified (see verify.py) and re-classified on a fresh forward pass before it counts;
an example is broken if any attack broke it. Each attack gets the run's seed and is timed and pass-counted.
The model stays in eval mode throughout, and after every attack the engine checks that no module's mode, no
parameter and no buffer changed (a BatchNorm switched to train mode would re-classify on batch statistics, an
attack that edits the weights would judge another model): a change is restored and ends the run (ModelChanged),
never a silently different model. Each attack works on copies of the examples, through the user-code boundary
(robustprune.boundary): what it does to them stays with it, and verification reads the engine's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from robustprune.attacks.base import ATTACKS, Attack, AttackContext
from robustprune.attacks.cost import check_battery_cost
from robustprune.attacks.counting import CountingModel
from robustprune.attacks.min_norm import MIN_NORM_ATTACKS
from robustprune.attacks.pgd_core import PGDTrace, combine_traces
from robustprune.attacks.verify import project, verify_adversarial
from robustprune.boundary import call_user, in_stage, stage
from robustprune.config import BatterySpec, long_allowed, read_battery
from robustprune.errors import ModelChanged, UsageError, UserCodeError
from robustprune.models.guard import ModelState, describe_output
from robustprune.models.modes import eval_mode
from robustprune.progress import progress_bar


@dataclass
class Predictions:
    """Predictions on a set of inputs; for a randomized model, `correct` means correct on every pass."""

    probs: np.ndarray  # (N, K) float64, mean over passes
    pred: np.ndarray
    conf: np.ndarray
    correct: np.ndarray


@dataclass
class AttackColumns:
    attempted: np.ndarray
    broken: np.ndarray
    adv_pred: np.ndarray  # -1 where not attempted
    adv_conf: np.ndarray  # nan where not attempted
    norm: np.ndarray  # nan where not attempted

    @classmethod
    def empty(cls, n: int) -> AttackColumns:
        return cls(
            np.zeros(n, bool), np.zeros(n, bool), np.full(n, -1, np.int64), np.full(n, np.nan), np.full(n, np.nan)
        )


@dataclass
class AttackRecord:
    label: str
    description: dict[str, Any]
    n_attempted: int = 0
    n_broken: int = 0
    seconds: float = 0.0
    n_forward: int = 0
    n_backward: int = 0
    flags: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the attack did not run on this model
    trace: PGDTrace | None = None  # robustprune's own attacks: per attempted example, in attempt order
    role: str = "battery"  # battery | probe (a health check's) | escalation: what put the attack in this run


@dataclass
class BatteryOutcome:
    clean: Predictions
    columns: dict[str, AttackColumns]
    records: list[AttackRecord]
    worst_probs: np.ndarray  # (N, K): probabilities on each example's worst-case input
    broken: np.ndarray  # broken by any attack, or misclassified clean
    worst_x: torch.Tensor  # each example's adversarial input where an attack broke it, else the clean input


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, n_passes: int = 1) -> Predictions:
    probs_sum, all_correct = [], []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        total = None
        correct = torch.ones(len(xb), dtype=torch.bool, device=xb.device)
        for _ in range(n_passes):
            logits = model(xb).double()
            correct &= logits.argmax(dim=1) == yb
            p = torch.softmax(logits, dim=1)
            total = p if total is None else total + p
        probs_sum.append((total / n_passes).cpu())
        all_correct.append(correct.cpu())
    probs = torch.cat(probs_sum).numpy() if probs_sum else np.zeros((0, 0))
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    conf = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = torch.cat(all_correct).numpy() if all_correct else np.zeros(0, bool)
    return Predictions(probs=probs, pred=pred.astype(np.int64), conf=conf, correct=correct)


def check_battery(battery: BatterySpec, num_classes: int | None = None) -> None:
    """Resolve every attack of `battery` without running anything: a known name, known settings of the right type
    within their bounds, support for the threat model and (when known) the class count. Commands call it before
    any data or model is loaded, so a refused battery never costs a trained model."""
    estimates = []
    for spec in battery.attacks:
        cls = ATTACKS.get(spec.name)
        if spec.applies_to(battery.threat.norm):
            estimates.append((spec.label, cls(spec, battery.threat, num_classes).passes_per_example()))
        else:  # not run for this norm, but a typo in it is still a typo
            cls.resolve_settings(spec)
    check_battery_cost(estimates, long_allowed(), battery.name)
    if battery.audit is not None:
        ATTACKS.get(battery.audit.attack).resolve_settings(battery.audit.attack_spec())
    if battery.eps_curve is not None:
        unknown = [a for a in battery.eps_curve.attacks if a not in MIN_NORM_ATTACKS]
        if unknown:
            raise UsageError(
                f"battery {battery.name!r}: [eps_curve] attack {unknown[0]!r} is not a minimum-norm attack; use "
                f"some of {', '.join(MIN_NORM_ATTACKS)}"
            )
    if not battery.active_attacks():
        raise UsageError(
            f"battery {battery.name!r} has no attack for the {battery.threat.norm} norm (each is limited by its "
            "'norms'): its robust accuracy would equal the clean accuracy; add an attack for this norm"
        )


def load_battery(spec: str, *, norm: str | None = None, eps: float | None = None) -> BatterySpec:
    """Read a battery by name or path and resolve every attack (check_battery); `norm` and `eps` override the
    file's threat model. The one way commands and the Python API read a battery."""
    battery = read_battery(spec, norm=norm, eps=eps)
    check_battery(battery)
    return battery


def build_attacks(battery: BatterySpec, num_classes: int, context: AttackContext | None = None) -> list[Attack]:
    return [ATTACKS.get(spec.name)(spec, battery.threat, num_classes, context) for spec in battery.active_attacks()]


def run_battery(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    battery: BatterySpec,
    *,
    num_classes: int,
    seed: int = 0,
    batch_size: int = 256,
    n_passes: int = 1,
    progress: bool = False,
    gradients: bool = True,
    parent: nn.Module | None = None,
    continue_from: BatteryOutcome | None = None,
    only: np.ndarray | None = None,
    role: str = "battery",
    bridged: bool = False,
    view: Callable[[nn.Module], AbstractContextManager[Any]] | None = None,
    points: dict[int, torch.Tensor] | None = None,
) -> BatteryOutcome:
    """Run `battery` against `model` on (x, y); see the module docstring for the semantics.

    `n_passes` > 1 scores a randomized model (correct only if correct on every pass); `gradients=False` says no
    gradient reaches the input (S6), so gradient attacks are skipped and recorded as such; `parent` is the dense
    model a pruned one came from (transfer attacks craft on it). `continue_from` runs more attacks (health probes,
    escalations) on what an earlier outcome left unbroken: its columns come first, and these attacks replace an
    example's worst-case probabilities only where they break it (calibration stays the battery's). `only` limits
    the attacks to these example indices (still only the unbroken ones); `role` is recorded with each attack;
    `bridged` says a straight-through view of the forward pass gives a gradient where the model gives none (BPDA);
    `view` is how the attacks see the model (BPDA's straight-through view): what they return is judged on the model
    as given; `points` are precomputed points (example -> input) that the `replay` attack hands back for verification.
    """
    context = AttackContext(verdict_passes=n_passes, gradients=gradients, parent=parent, bridged=bridged, points=points)
    attacks = build_attacks(battery, num_classes, context)
    n = len(x)
    with eval_mode(model, freeze_parameters=True), eval_mode(parent or nn.Identity(), freeze_parameters=True):
        state = ModelState(model)
        if continue_from is None:
            clean = predict(model, x, y, batch_size=batch_size, n_passes=n_passes)
            state.require_unchanged(
                model,
                lambda what: UsageError(
                    f"the model changes its own state in an eval-mode forward pass ({what}), so every verdict would "
                    "depend on what ran before; make its eval-mode forward pass stateless"
                ),
            )
            broken, worst_probs, worst_x = ~clean.correct, clean.probs.copy(), x.clone()
            columns: dict[str, AttackColumns] = {}
            records: list[AttackRecord] = []
        else:
            clean = continue_from.clean
            broken, worst_probs = continue_from.broken.copy(), continue_from.worst_probs.copy()
            worst_x = continue_from.worst_x.clone()
            columns, records = dict(continue_from.columns), list(continue_from.records)
        for attack in attacks:
            cols = AttackColumns.empty(n)
            record = AttackRecord(label=attack.spec.label, description=attack.describe(), role=role)
            columns[record.label], _ = cols, records.append(record)
            record.skipped = attack.skip_reason()
            todo = ~broken
            if only is not None:
                todo &= np.isin(np.arange(n), only)
            index = torch.from_numpy(np.flatnonzero(todo))
            if len(index) == 0 or record.skipped:
                continue
            x_sub, y_sub = x[index], y[index]
            attack.index = index
            counter = CountingModel(model)
            torch.manual_seed(seed)
            bar = progress_bar(len(index), record.label, "ex", progress)
            started = time.perf_counter()
            with stage(f"attack {record.label}"):
                with view(model) if view is not None else nullcontext():
                    x_adv = _perturb(
                        attack, counter, x_sub, y_sub, seed=seed, batch_size=batch_size, on_batch=bar.update
                    )
                state.require_unchanged(
                    model,
                    lambda what, label=record.label: ModelChanged(
                        f"attack {label!r} changed the model it was given ({what}){in_stage()}: its verdicts and every "
                        "later attack's would be taken on another model, so nothing is counted (the model was restored)"
                    ),
                )
            record.seconds = time.perf_counter() - started
            bar.close()
            record.n_forward = counter.n_forward + attack.other_passes[0]
            record.n_backward = counter.n_backward + attack.other_passes[1]
            record.trace = combine_traces(attack.traces)
            record.flags = list(getattr(attack, "flags", []))
            record.description = attack.describe()  # settings an attack adapted to the model (notes) included
            norms = verify_adversarial(record.label, x_adv, x_sub, battery.threat, index)
            adv = predict(model, x_adv, y_sub, batch_size=batch_size, n_passes=n_passes)
            state.require_unchanged(model)
            idx = index.numpy()
            newly_broken = ~adv.correct
            cols.attempted[idx] = True
            cols.broken[idx] = newly_broken
            cols.adv_pred[idx] = adv.pred
            cols.adv_conf[idx] = adv.conf
            cols.norm[idx] = norms.cpu().numpy()
            keep = idx if continue_from is None else idx[newly_broken]
            worst_probs[keep] = adv.probs if continue_from is None else adv.probs[newly_broken]
            broken[idx[newly_broken]] = True
            worst_x[torch.from_numpy(idx[newly_broken])] = x_adv[torch.from_numpy(newly_broken)].to(worst_x)
            record.n_attempted, record.n_broken = len(idx), int(newly_broken.sum())
    return BatteryOutcome(
        clean=clean, columns=columns, records=records, worst_probs=worst_probs, broken=broken, worst_x=worst_x
    )


def _perturb(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """`attack.perturb` on copies of the examples, through the user-code boundary: an attack that raises, or returns
    anything but a floating tensor, is one line naming it (exit 1). float64 / float16 examples are brought to the
    inputs' dtype here; whether they are inside the threat model is verification's business."""
    implementation = attack.implementation or attack.name
    who = "the attack" if implementation == attack.spec.label else f"the attack ({implementation})"
    out = call_user(attack.perturb, model, x.clone(), y.clone(), who=who, unusable=False, **kwargs)
    if not isinstance(out, torch.Tensor) or out.is_complex() or not out.is_floating_point():
        raise UserCodeError(
            f"{who} returned {describe_output(out)}{in_stage()}, not a floating tensor of adversarial examples"
        )
    if out.layout != torch.strided or out.is_meta:
        raise UserCodeError(f"{who} returned a {out.layout} tensor{in_stage()}; return a dense tensor like its input")
    widened = out.detach().to(device=x.device, dtype=x.dtype)
    if out.dtype in (torch.float16, torch.bfloat16) and out.shape == x.shape:
        # half precision cannot hold every point of the ball: the rounding, not the attack, may step outside it
        note = f"returned {str(out.dtype).removeprefix('torch.')} examples: widened and projected into the threat model"
        if note not in attack.notes:
            attack.notes.append(note)
        return project(widened, x, attack.threat)
    return widened
