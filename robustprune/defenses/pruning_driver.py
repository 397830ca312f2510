"""Pruning on masks for any defense's loss: the schedules of a recipe's [pruning] table, run inside the shared loop.

The schedules themselves are registered in `robustprune.sparsity.schedules` (one_shot, iterative, agp,
one_cycle); this module realises them: a `rounds` schedule (iterative) runs one fit per round, each with its own
learning-rate schedule and epochs/R epochs; `one_shot` and `gradual` ones (agp, one_cycle) run as a callback that
updates the masks at the steps the schedule names.
- reinit (the `scratch` control of Liu et al., "Rethinking the value of network pruning", arXiv 1810.05270):
  the parent's mask at the target sparsity, weights re-initialised with the run's seed, mask fixed, trained from
  scratch.

Masks are torch.nn.utils.prune re-parametrisations (weight = weight_orig * mask), so pruned weights stay exactly
zero through every optimizer step. Sparsity is counted on effective Conv/Linear weights; the achieved value must
land within SPARSITY_TOLERANCE of the target or the run fails with RuntimeError.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from robustprune.data import Dataset
from robustprune.defenses.base import Artifact, PruningSpec, Recipe
from robustprune.defenses.train_loop import Callback, Loss, StepContext, TrainSpec, accuracy, fit, pgd_probe
from robustprune.errors import UsageError
from robustprune.metrics.activity import dead_relu_rate
from robustprune.sparsity import (
    PRUNING_CRITERIA,
    SCHEDULES,
    apply_masks,
    check_sparsity,
    effective_weight,
    prunable_modules,
    remove_masks,
    sparsity_report,
)
from robustprune.sparsity.activate import ap_candidates, ap_masks, snapshot_weights
from robustprune.sparsity.masks import load_masked_state, masked_state
from robustprune.sparsity.structured import INPUT_SHAPE_ATTR, apply_structured, channel_sparsity, is_structured

SPARSITY_TOLERANCE = 0.005  # 0.5 percentage points

__all__ = [
    "SPARSITY_TOLERANCE",
    "ScheduledPruning",
    "achieved_sparsity",
    "check_achieved",
    "copy_weights",
    "criterion_sparsity",
    "final_metrics",
    "prune_to",
    "resolve_pruning",
    "scratch_init",
    "train_with_pruning",
    "validate_pruning",
]


def resolve_pruning(recipe: Recipe, sparsity: float, has_parent: bool) -> tuple[PruningSpec | None, bool]:
    """The pruning plan a run uses, and whether it was defaulted.

    A recipe without a [pruning] table trains dense at sparsity 0. Asked for sparsity > 0 it still runs (e.g.
    `pgd_at --sparsity 0.9` = adversarial training + pruning) with global magnitude pruning: one-shot from the
    parent when there is one (prune, then fine-tune), else AGP over the run (pruning a random init one-shot
    would be magnitude pruning at initialisation, a much weaker baseline).
    """
    check_sparsity(sparsity)
    if recipe.pruning is not None:
        return recipe.pruning, False
    if sparsity == 0.0:
        return None, False
    return PruningSpec(schedule="one_shot" if has_parent else "agp"), True


def _eligible_fraction(model: nn.Module, exclude: Sequence[str]) -> float:
    sizes = {name: m.weight.numel() for name, m in prunable_modules(model)}
    known = set(sizes)
    unknown = sorted(set(exclude) - known)
    if unknown:
        raise UsageError(f"[pruning] exclude names unknown layers {unknown}; prunable: {', '.join(sizes)}")
    total = sum(sizes.values())
    return sum(n for name, n in sizes.items() if name not in set(exclude)) / total if total else 0.0


def excluded_layers(model: nn.Module, spec: PruningSpec) -> tuple[str, ...]:
    """The layers `spec` never prunes: those it names, and every Linear layer when it prunes Conv layers only."""
    linear = [name for name, m in prunable_modules(model) if isinstance(m, nn.Linear)] if spec.layers == "conv" else []
    return tuple(dict.fromkeys([*spec.exclude, *linear]))


def criterion_sparsity(model: nn.Module, spec: PruningSpec, sparsity: float) -> float:
    """The share of *eligible* weights to prune so that the headline sparsity (over all Conv/Linear weights,
    excluded layers included) reaches `sparsity`."""
    exclude = excluded_layers(model, spec)
    fraction = _eligible_fraction(model, exclude)
    if fraction <= 0:
        raise UsageError("[pruning] exclude leaves no prunable layer")
    scaled = sparsity / fraction
    if scaled >= 1.0:
        raise UsageError(
            f"sparsity {sparsity} is impossible with exclude={list(exclude)}: the excluded layers hold "
            f"{1 - fraction:.1%} of the prunable weights; lower the sparsity or exclude fewer layers"
            + (" (layers = 'conv' excludes every Linear layer)" if spec.layers == "conv" else "")
        )
    return scaled


def validate_pruning(
    model: nn.Module, recipe: Recipe, sparsity: float, *, has_parent: bool, epochs: int, parent_sparsity: float = 0.0
) -> None:
    """Every check that needs no training: run before anything is trained or written."""
    spec, _ = resolve_pruning(recipe, sparsity, has_parent)
    reinit = spec is not None and spec.reinit
    unit = "share of channels" if is_structured_spec(spec) else "sparsity"
    if has_parent and not reinit and parent_sparsity > sparsity + SPARSITY_TOLERANCE:
        # The parent's masks come along (a sparse parent stays sparse); pruning only ever removes weights.
        raise UsageError(
            f"the parent's {unit} pruned is already {parent_sparsity:.4f}, above the target {sparsity:.4f}: pruning "
            f"never restores weights; pass --sparsity {parent_sparsity:.4f} or more, or use a denser parent"
        )
    if spec is None:
        return
    if is_structured_spec(spec):
        if spec.ap_share:
            raise UsageError("[pruning] ap_share works with unstructured criteria only (AP removes single weights)")
        check_channel_target(model, spec, sparsity)
    else:
        criterion_sparsity(model, spec, sparsity)
    if spec.reinit and not has_parent:
        raise UsageError(f"recipe {recipe.name!r} re-initialises a parent's mask (pruning.reinit): give --parent")
    if spec.reinit_budget == "compute" and recipe.train.cycle_momentum:
        raise UsageError("Scratch-B (reinit_budget = compute) trains with the step schedule: drop train.cycle_momentum")
    if spec.reinit and spec.schedule != "one_shot":
        raise UsageError("pruning.reinit takes the parent's mask at the target once: use pruning.schedule = one_shot")
    if spec.schedule == "iterative" and epochs < spec.rounds:
        raise UsageError(
            f"iterative pruning with {spec.rounds} rounds needs at least {spec.rounds} epochs, got {epochs}; "
            "raise train.epochs or lower pruning.rounds"
        )


def check_channel_target(model: nn.Module, spec: PruningSpec, sparsity: float) -> None:
    """A structured target every layer can meet while keeping one channel (the criteria never empty a layer):
    checked before training, not discovered at its end."""
    from robustprune.sparsity.structured import channel_budget, channel_groups

    groups = channel_groups(model, getattr(model, INPUT_SHAPE_ATTR, None), excluded_layers(model, spec))
    if not groups:
        raise UsageError(f"[pruning] {spec.criterion}: the model has no layer whose channels can be pruned")
    channel_budget(groups, sparsity, glob=not spec.criterion.startswith("layerwise_"))


def is_structured_spec(spec: PruningSpec | None) -> bool:
    """Whether `spec` prunes whole channels (its sparsity is then a share of channels, not of weights)."""
    return spec is not None and is_structured(PRUNING_CRITERIA.get(spec.criterion))


def achieved_sparsity(model: nn.Module, spec: PruningSpec | None = None) -> float:
    """The sparsity `spec` aims at: the share of eligible channels closed for a structured criterion, else the
    headline share of zero Conv/Linear weights."""
    if spec is not None and is_structured_spec(spec):
        return channel_sparsity(model, exclude=excluded_layers(model, spec)).sparsity
    return float(sparsity_report(model)["sparsity"])


def check_achieved(
    model: nn.Module, target: float, tolerance: float = SPARSITY_TOLERANCE, spec: PruningSpec | None = None
) -> float:
    """The achieved sparsity (see achieved_sparsity); RuntimeError when it misses `target` by more than `tolerance`."""
    achieved = achieved_sparsity(model, spec)
    if abs(achieved - target) > tolerance:
        raise RuntimeError(
            f"achieved sparsity {achieved:.4f} misses the target {target:.4f} by more than {tolerance:.3f}; "
            "the pruning plan did not reach its target (see the training log)"
        )
    return achieved


def prune_to(model: nn.Module, spec: PruningSpec, sparsity: float, generator: torch.Generator | None = None) -> None:
    """Attach masks with exactly the target headline sparsity by `spec.criterion` (already-zero weights first); for a
    structured criterion, close exactly the target share of channels (weights, biases, BatchNorm, consumers)."""
    fn = PRUNING_CRITERIA.get(spec.criterion)
    if is_structured(fn):
        apply_structured(model, None, fn(model, sparsity, generator, exclude=excluded_layers(model, spec)))
        return
    masks = fn(model, criterion_sparsity(model, spec, sparsity), generator, exclude=excluded_layers(model, spec))
    apply_masks(model, masks)


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Load `src`'s effective weights and every prune mask it carries (weights, and the bias / BatchNorm masks of
    structured pruning) into `dst` of the same architecture."""
    load_masked_state(dst, *masked_state(src))


def scratch_init(model: nn.Module, masks: dict[str, torch.Tensor], scheme: str, generator: torch.Generator) -> None:
    """Re-initialised weights under a fixed mask (Liu et al. arXiv 1810.05270). `model` already holds a fresh init
    drawn with the run's seed. `sparse_kaiming` follows the reference code (cifar/weight-level/cifar_E.py): conv
    weights ~ N(0, 2/n) with n = surviving weights / in_channels, i.e. Kaiming fan-out counted over the
    connections that survive; Linear layers keep the architecture's init. `default` keeps the fresh init as is.
    """
    remove_masks(model)
    if scheme == "sparse_kaiming":
        with torch.no_grad():
            for name, module in prunable_modules(model):
                if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and name in masks:
                    n = float(masks[name].sum()) / module.in_channels
                    if n > 0:
                        draw = torch.randn(module.weight.shape, generator=generator, dtype=module.weight.dtype).to(
                            module.weight
                        )
                        module.weight.copy_(draw * math.sqrt(2.0 / n))
    apply_masks(model, masks)


def eligible_layers(model: nn.Module, spec: PruningSpec) -> list[str]:
    """The prunable layers `spec` may prune (every Conv/Linear layer but the excluded ones)."""
    excluded = set(excluded_layers(model, spec))
    return [name for name, _ in prunable_modules(model) if name not in excluded]


def _eligible_zeros(model: nn.Module, names: list[str]) -> tuple[int, int]:
    """(pruned, total) weights over the named layers."""
    modules = dict(prunable_modules(model))
    zeros = sum(int((effective_weight(modules[n]) == 0).sum()) for n in names)
    return zeros, sum(modules[n].weight.numel() for n in names)


def prune_round_with_ap(
    model: nn.Module,
    spec: PruningSpec,
    target: float,
    start: dict[str, torch.Tensor],
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """One round of an iterative schedule with Activating-while-Pruning (algorithms.md §4.4, `resnet_20.py` of the
    reference): the round's increment (to headline `target`) is split; the base criterion first removes all of it
    but k = round(ap_share x alive weights), then AP removes the k alive negative weights that moved least since
    `start` (the previous round's training began there). k is capped by the increment and by the candidates, and
    the round lands on the target exactly, as without AP. Returns the round's record."""
    names = list(start)
    zeros_before, eligible = _eligible_zeros(model, names)
    wanted = round(criterion_sparsity(model, spec, target) * eligible)
    increment = max(wanted - zeros_before, 0)
    k = min(round(spec.ap_share * (eligible - zeros_before)), increment)
    fn, exclude = PRUNING_CRITERIA.get(spec.criterion), excluded_layers(model, spec)
    apply_masks(model, fn(model, (wanted - k) / eligible, generator, exclude=exclude))
    k = min(k, ap_candidates(model, start))  # too few negative survivors: the base criterion takes the rest
    apply_masks(model, ap_masks(model, start, k))
    if _eligible_zeros(model, names)[0] < wanted:
        apply_masks(model, fn(model, wanted / eligible, generator, exclude=exclude))
    zeros_after = _eligible_zeros(model, names)[0]
    return {
        "target": target,
        "achieved": achieved_sparsity(model),
        "alive_before": eligible - zeros_before,
        "base_removed": zeros_after - zeros_before - k,
        "ap_removed": k,
    }


def scratch_b_spec(train_spec: TrainSpec, model: nn.Module, input_shape: tuple[int, ...]) -> tuple[TrainSpec, dict]:
    """Scratch-B (Liu et al., `cifar_B.py`): the dense run's compute budget, epochs x dense MACs / pruned MACs
    (MACs counted on the surviving weights), with the learning rate decayed x0.1 at 50 % and 75 % of the run."""
    report = sparsity_report(model, input_shape)
    ratio = report["macs_dense"] / max(report["macs_effective"], 1)
    epochs = max(train_spec.epochs, round(train_spec.epochs * ratio))
    budget = {
        "base_epochs": train_spec.epochs,
        "epochs": epochs,
        "macs_dense": report["macs_dense"],
        "macs_pruned": report["macs_effective"],
        "macs_ratio": ratio,
        "lr_schedule": "step",
    }
    return replace(train_spec, epochs=epochs, schedule="step"), budget


class ScheduledPruning(Callback):
    """Drives the masks during `fit`: prunes at step t (t optimizer steps done) to the schedule's target.

    `history` holds one record per mask update: {"step", "target", "achieved"}.
    """

    def __init__(self, spec: PruningSpec, sparsity: float, *, generator: torch.Generator | None = None) -> None:
        self.schedule = SCHEDULES.get(spec.schedule)
        if self.schedule.kind == "rounds":
            raise ValueError(f"{spec.schedule} pruning runs as rounds of fit (train_with_pruning), not as one callback")
        self.spec = spec
        self.sparsity = check_sparsity(sparsity)
        self.generator = generator
        self.history: list[dict[str, Any]] = []
        self.total = 0
        self.start = 0.0
        self.current = 0.0

    def target_at(self, t: int) -> float | None:
        """The target sparsity if the masks are updated after `t` steps, else None (see sparsity.schedules)."""
        return self.schedule.target_at(t, self.total, min(self.start, self.sparsity), self.sparsity, self.spec)

    # -- hooks ----------------------------------------------------------------------------------------------------
    def on_train_begin(self, ctx: StepContext) -> None:
        self.total = ctx.total_steps
        self.start = achieved_sparsity(ctx.model, self.spec)  # AGP starts from the parent's sparsity, not from 0
        self._update(0, ctx.model)

    def on_step_end(self, ctx: StepContext) -> None:
        self._update(ctx.step + 1, ctx.model)

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any]:
        return {"target_sparsity": self.current, "sparsity": achieved_sparsity(ctx.model, self.spec)}

    def _update(self, t: int, model: nn.Module) -> None:
        target = self.target_at(t)
        if target is None:
            return
        target = max(target, self.current)  # never un-prune: rounding must not revive weights
        prune_to(model, self.spec, target, self.generator)
        self.current = target
        self.history.append({"step": t, "target": target, "achieved": achieved_sparsity(model, self.spec)})


def final_metrics(model: nn.Module, val: Dataset, recipe: Recipe) -> dict[str, Any]:
    """Validation accuracy, the PGD probe and the dead-ReLU rate of the finished model (the manifest's `final`)."""
    spec = recipe.train
    x, y = val.x[: spec.probe_size], val.y[: spec.probe_size]
    has_relu = any(isinstance(m, nn.ReLU) for m in model.modules())
    return {
        "val_acc": accuracy(model, val.x, val.y),
        "pgd_acc": pgd_probe(model, x, y, spec.probe_eps, spec.probe_steps),
        "probe": {
            "attack": "pgd_linf",
            "eps": spec.probe_eps,
            "steps": spec.probe_steps,
            "examples": len(y),
            "split": val.split,
        },
        "dead_relu_rate": dead_relu_rate(model, x) if has_relu else None,
    }


_final_metrics = final_metrics  # the name an earlier revision exported; deadwooding.py imports it


def train_with_pruning(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    recipe: Recipe,
    *,
    loss: Loss,
    callbacks: Callable[[], Sequence[Callback]] = lambda: (),
    sparsity: float,
    parent: nn.Module | None,
    seed: int,
    progress: bool = False,
) -> Artifact:
    """Train `model` in place with `loss` while realising the recipe's pruning plan; returns the Artifact.

    `model` arrives freshly initialised with the run's seed; it starts from `parent`'s weights when a parent is
    given (unless the plan re-initialises). `callbacks` builds the defense's own callbacks (fresh per fit; the
    iterative schedule runs one fit per round). Ends with the sparsity check (RuntimeError on a miss).
    """
    sparsity = check_sparsity(sparsity)
    spec, defaulted = resolve_pruning(recipe, sparsity, parent is not None)
    for net in (model, parent):  # structured criteria trace the model with one forward pass of this shape
        if net is not None:
            setattr(net, INPUT_SHAPE_ATTR, tuple(train.input_shape))
    validate_pruning(
        model,
        recipe,
        sparsity,
        has_parent=parent is not None,
        epochs=recipe.train.epochs,
        parent_sparsity=achieved_sparsity(parent, spec) if parent is not None else 0.0,
    )
    generator = torch.Generator().manual_seed(seed)
    events: list[dict[str, Any]] = []
    if parent is not None and not (spec is not None and spec.reinit):
        copy_weights(parent, model)
        events.append({"event": "start_from_parent", "sparsity": achieved_sparsity(model)})

    log: list[dict[str, Any]] = []
    if spec is None:
        log = fit(model, train, val, recipe.train, loss=loss, callbacks=list(callbacks()), seed=seed, progress=progress)
    elif spec.reinit:
        assert parent is not None  # validate_pruning refuses reinit without a parent
        fn = PRUNING_CRITERIA.get(spec.criterion)
        exclude = excluded_layers(parent, spec)
        if is_structured(fn):
            masks = fn(parent, sparsity, generator, exclude=exclude)
            scratch_init(model, masks, spec.reinit_scheme, generator)
            apply_structured(model, None, masks)  # the closed channels' biases, BatchNorm and consumers too
        else:
            masks = fn(parent, criterion_sparsity(parent, spec, sparsity), generator, exclude=exclude)
            scratch_init(model, masks, spec.reinit_scheme, generator)
        events.append(
            {"event": "scratch_reinit", "scheme": spec.reinit_scheme, "sparsity": achieved_sparsity(model, spec)}
        )
        train_spec = recipe.train
        if spec.reinit_budget == "compute":
            train_spec, budget = scratch_b_spec(recipe.train, model, train.input_shape)
            events.append({"event": "scratch_b_budget", **budget})
        log = fit(model, train, val, train_spec, loss=loss, callbacks=list(callbacks()), seed=seed, progress=progress)
    elif SCHEDULES.get(spec.schedule).kind == "rounds":
        targets = SCHEDULES.get(spec.schedule).round_targets(sparsity, spec)
        epochs = [
            recipe.train.epochs // spec.rounds + (r < recipe.train.epochs % spec.rounds) for r in range(spec.rounds)
        ]
        start: dict[str, torch.Tensor] | None = None  # AP: the weights the previous round's training started from
        for r, (target, n_epochs) in enumerate(zip(targets, epochs, strict=True)):
            if spec.ap_share and start is not None:
                events.append(
                    {"event": "prune", "round": r + 1, **prune_round_with_ap(model, spec, target, start, generator)}
                )
            else:
                prune_to(model, spec, target, generator)
                events.append(
                    {"event": "prune", "round": r + 1, "target": target, "achieved": achieved_sparsity(model, spec)}
                )
            if spec.ap_share:
                start = snapshot_weights(model, eligible_layers(model, spec))
            round_log = fit(
                model,
                train,
                val,
                replace(recipe.train, epochs=n_epochs),
                loss=loss,
                callbacks=list(callbacks()),
                seed=seed + 10_007 * r,
                progress=progress,
            )
            for entry in round_log:
                entry.update(
                    {
                        "round": r + 1,
                        "round_epoch": entry["epoch"],
                        "epoch": len(log) + 1,
                        "target_sparsity": target,
                        "sparsity": achieved_sparsity(model, spec),
                    }
                )
                log.append(entry)
            if round_log and round_log[-1].get("stopped_early"):
                break  # a defense's guard stopped training: the final check below still enforces the target
    else:
        driver = ScheduledPruning(spec, sparsity, generator=generator)
        log = fit(
            model, train, val, recipe.train, loss=loss, callbacks=[driver, *callbacks()], seed=seed, progress=progress
        )
        events += [{"event": "prune", **h} for h in driver.history]

    if spec is not None and achieved_sparsity(model, spec) < sparsity - SPARSITY_TOLERANCE:
        # Training stopped before the schedule finished (e.g. the FGSM-RS guard): reach the target now, loudly.
        prune_to(model, spec, sparsity, generator)
        events.append(
            {"event": "final_prune_without_training", "target": sparsity, "achieved": achieved_sparsity(model, spec)}
        )
    achieved = check_achieved(model, sparsity, spec=spec)
    model.eval()
    extra = {
        "pruning": spec.to_dict() if spec is not None else None,
        "pruning_defaulted": defaulted,
        "pruning_events": events,
        "target_sparsity": sparsity,
        "achieved_sparsity": achieved,
        "final": final_metrics(model, val, recipe),
    }
    if is_structured_spec(spec):
        report = channel_sparsity(model, exclude=excluded_layers(model, spec))  # the groups the plan prunes
        extra.update({"sparsity_unit": "channels", "channel_sparsity": report.to_dict()})
    return Artifact(model=model, log=log, extra=extra)
