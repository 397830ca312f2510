"""`robustprune train`: recipe + dataset + sparsity (+ parent) -> a trained, possibly pruned checkpoint + manifest.

Everything that can be wrong with the inputs (recipe keys and overrides, sparsity, dataset, a missing or ill-fitting
parent, the pruning plan) is checked by `prepare` before anything trains or is written; the checkpoint is written
last, atomically (robustprune.models.save_checkpoint). `train_model` is the Python API the sweep uses.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustprune.data import Dataset, load_dataset
from robustprune.data.holdout import stratified_holdout
from robustprune.defenses.base import DEFENSES, Artifact, Defense, Recipe, load_recipe
from robustprune.defenses.pruning_driver import (
    SPARSITY_TOLERANCE,
    achieved_sparsity,
    resolve_pruning,
    validate_pruning,
)
from robustprune.errors import UsageError
from robustprune.jsonio import to_jsonable
from robustprune.models.checkpoint import CheckpointInfo
from robustprune.models.state import fold_pruned_state_dict
from robustprune.paths import CHECKPOINT_FILE
from robustprune.sparsity import check_sparsity, sparsity_report
from robustprune.sparsity.structured import INPUT_SHAPE_ATTR
from robustprune.validation import check_int, check_seed

MANIFEST_KIND = "robustprune.train"
MANIFEST_VERSION = 1

__all__ = [
    "TrainInputs",
    "TrainPlan",
    "execute",
    "prepare",
    "resolve",
    "save_trained",
    "summary",
    "train_model",
]


@dataclass
class TrainPlan:
    """A validated training run: nothing has been trained or written yet."""

    recipe: Recipe
    overrides: tuple[str, ...]
    defense: Defense
    dataset: str
    train: Dataset
    val: Dataset
    sparsity: float
    seed: int
    model: nn.Module  # fresh init drawn with the run's seed
    parent: nn.Module | None
    parent_record: dict[str, Any] | None
    holdout: dict[str, Any] | None = None


def _state_sha256(model: nn.Module) -> str:
    """A hash of a model's effective tensors (for a parent handed over in memory, which has no file hash)."""
    folded, masks = fold_pruned_state_dict(model.state_dict())
    digest = hashlib.sha256()
    for key in sorted(folded):
        digest.update(key.encode())
        digest.update(folded[key].detach().cpu().contiguous().numpy().tobytes())
    for key in sorted(masks):
        digest.update(f"mask:{key}".encode())
        digest.update(masks[key].cpu().numpy().tobytes())
    return digest.hexdigest()


def _check_fits(parent: nn.Module, model: nn.Module, architecture: str) -> None:
    theirs, _ = fold_pruned_state_dict(parent.state_dict())
    ours, _ = fold_pruned_state_dict(model.state_dict())
    bad = sorted(set(theirs) ^ set(ours)) or sorted(k for k in ours if theirs[k].shape != ours[k].shape)
    if bad:
        raise UsageError(f"the parent model does not fit architecture {architecture} (differs at {bad[0]!r})")


@dataclass
class TrainInputs:
    """Every input of a training run, resolved and checked; no model has been built yet."""

    recipe: Recipe
    overrides: tuple[str, ...]
    defense: Defense
    dataset: str
    train: Dataset
    val: Dataset
    sparsity: float
    seed: int
    parent: str | Path | nn.Module | None
    holdout: dict[str, Any] | None = None  # set when the data had no split of its own to validate on

    def key(self) -> str:
        """What names the default output directory: the run's configuration, the parent's file hash included."""
        from robustprune.config import canonical_key
        from robustprune.models import sha256_file

        parent = self.parent
        parent_hash = sha256_file(parent) if isinstance(parent, str | Path) else None
        return canonical_key(
            {
                "recipe": self.recipe.to_dict(),
                "data": self.train.fingerprint(),
                "sparsity": self.sparsity,
                "seed": self.seed,
                "parent": parent_hash,
            }
        )


def resolve(
    recipe: str | Recipe,
    *,
    dataset: str = "digits",
    sparsity: float = 0.0,
    parent: str | Path | nn.Module | None = None,
    seed: int = 0,
    epochs: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> TrainInputs:
    """Check every input of a training run (UsageError on bad input) without building or loading a model."""
    from robustprune.models.checkpoint import inspect_checkpoint

    overrides = tuple(overrides)
    if epochs is not None:
        check_int(epochs, "--epochs", bound="epochs")
    check_seed(seed)
    if isinstance(recipe, Recipe):
        if overrides:
            raise UsageError("overrides apply to a recipe name or file; edit the Recipe object instead")
    else:
        recipe = load_recipe(recipe, overrides)
    if epochs is not None:
        recipe = replace(recipe, train=replace(recipe.train, epochs=epochs))
    defense = DEFENSES.get(recipe.defense)(recipe)
    sparsity = check_sparsity(sparsity, "--sparsity")
    if recipe.needs_parent and parent is None:
        raise UsageError(f"recipe {recipe.name!r} needs a parent model and got none: pass --parent CHECKPOINT")
    if isinstance(parent, str | Path):
        try:
            inspect_checkpoint(parent)
        except UsageError as err:
            raise UsageError(f"--parent: {err}") from None
    train, val = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    holdout = None
    if train.fingerprint() == val.fingerprint():  # one set of examples served as both splits (e.g. an x/y .npz)
        train, val, record = stratified_holdout(train, seed=seed)
        holdout = record.to_dict()
    return TrainInputs(recipe, overrides, defense, str(dataset), train, val, sparsity, seed, parent, holdout)


def prepare(
    recipe: str | Recipe | TrainInputs,
    *,
    dataset: str = "digits",
    sparsity: float = 0.0,
    parent: str | Path | nn.Module | None = None,
    seed: int = 0,
    epochs: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> TrainPlan:
    """Resolve and validate every input of a training run (UsageError on bad input), then build the model and load
    the parent; trains nothing."""
    from robustprune.models import load_checkpoint

    if isinstance(recipe, TrainInputs):
        inputs = recipe
    else:
        inputs = resolve(
            recipe, dataset=dataset, sparsity=sparsity, parent=parent, seed=seed, epochs=epochs, overrides=overrides
        )
    recipe, defense, train, sparsity, parent = (
        inputs.recipe,
        inputs.defense,
        inputs.train,
        inputs.sparsity,
        inputs.parent,
    )
    torch.manual_seed(inputs.seed)
    model = defense.build_model(train.num_classes, train.input_shape)
    parent_model: nn.Module | None = None
    record: dict[str, Any] | None = None
    if isinstance(parent, nn.Module):
        _check_fits(parent, model, recipe.architecture)
        parent_model = parent
        record = {
            "path": None,
            "sha256": None,
            "state_sha256": _state_sha256(parent),
            "sparsity": float(sparsity_report(parent)["sparsity"]),
        }
    elif parent is not None:
        shell = defense.build_model(train.num_classes, train.input_shape)
        try:
            parent_model, info = load_checkpoint(shell, parent)  # safetensors / state_dict only: no trust flag
        except UsageError as err:  # one line already; point at the flags of `train`, not of `score`
            hint = f"check --parent and the recipe's architecture ({recipe.architecture})"
            raise UsageError(
                f"--parent: {str(err).replace('check --model and the dataset', hint + ' and the dataset')}"
            ) from None
        origin = (info.manifest or {}).get("recipe")  # a train manifest holds the recipe dict; others may not
        record = {
            "path": str(parent),
            "sha256": info.sha256,
            "format": info.format,
            "recipe": origin.get("name") if isinstance(origin, dict) else origin,
            "sparsity": float(sparsity_report(parent_model)["sparsity"]),
        }
    for net in (model, parent_model):  # structured plans trace the models with inputs of this shape
        if net is not None:
            setattr(net, INPUT_SHAPE_ATTR, tuple(train.input_shape))
    spec, _ = resolve_pruning(recipe, sparsity, parent_model is not None)
    validate_pruning(
        model,
        recipe,
        sparsity,
        has_parent=parent_model is not None,
        epochs=recipe.train.epochs,
        # in the plan's unit: a structured plan compares the parent's share of closed channels with its target
        parent_sparsity=achieved_sparsity(parent_model, spec) if parent_model is not None else 0.0,
    )
    return TrainPlan(
        recipe=recipe,
        overrides=inputs.overrides,
        defense=defense,
        dataset=inputs.dataset,
        train=train,
        val=inputs.val,
        sparsity=sparsity,
        seed=inputs.seed,
        model=model,
        parent=parent_model,
        parent_record=record,
        holdout=inputs.holdout,
    )


def execute(
    plan: TrainPlan,
    *,
    progress: bool = False,
    command: list[str] | None = None,
    device: str | torch.device | None = None,
) -> tuple[Artifact, dict]:
    """Train the plan; returns the Artifact and the manifest that goes beside its checkpoint.

    `device` (robustprune.devices.resolve_device; None: the CPU, where the plan built the model): the model, the
    parent and the data are moved there once before training; the trained model comes back on the CPU."""
    from robustprune.devices import model_device, resolve_device
    from robustprune.provenance import collect

    device = resolve_device(device) if device is not None else model_device(plan.model)
    plan.model.to(device)
    if plan.parent is not None:
        plan.parent.to(device)
    train, val = (replace(d, x=d.x.to(device), y=d.y.to(device)) for d in (plan.train, plan.val))
    started = time.perf_counter()
    artifact = plan.defense.run(
        plan.model, train, val, sparsity=plan.sparsity, parent=plan.parent, seed=plan.seed, progress=progress
    )
    seconds = time.perf_counter() - started
    model = artifact.model.to("cpu")
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise RuntimeError("training diverged (non-finite weights); lower train.lr or check the recipe")
    report = sparsity_report(model, plan.train.input_shape)
    extra = dict(artifact.extra)
    manifest = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "recipe": plan.recipe.to_dict(),
        "overrides": list(plan.overrides),
        "defense": plan.recipe.defense,
        **({"reconstruction": True} if plan.defense.reconstruction else {}),  # not the published method (Deadwooding)
        "settings": extra.pop("settings", dict(plan.defense.settings)),
        "architecture": plan.recipe.architecture,
        "dataset": {
            "spec": plan.dataset,
            "name": plan.train.name,
            "num_classes": plan.train.num_classes,
            "input_shape": list(plan.train.input_shape),
            "train_fingerprint": plan.train.fingerprint(),
            "val_fingerprint": plan.val.fingerprint(),
            "train_examples": len(plan.train),
            "val_examples": len(plan.val),
            **({"validation": plan.holdout} if plan.holdout else {}),
        },
        "seed": plan.seed,
        "sparsity": {
            "target": plan.sparsity,
            "achieved": report["sparsity"],
            "tolerance": SPARSITY_TOLERANCE,
            "counted_over": "Conv/Linear weights (effective, weight * mask)",
            # structured methods (DAM, channel criteria) aim at a share of channels: the target is in that unit
            "target_unit": extra.pop("sparsity_unit", "weights"),
            **({"channels": extra.pop("channel_sparsity")} if "channel_sparsity" in extra else {}),
            "all_sparsity": report["all_sparsity"],
            "macs_dense": report["macs_dense"],
            "macs_effective": report["macs_effective"],
            "layers": report["layers"],
        },
        "masks": {
            "stored": "in the safetensors file as __mask__.<module>.weight bool tensors, re-applied on load",
            "layers": sorted(n for n, m in model.named_modules() if hasattr(m, "weight_mask")),
        },
        "pruning": extra.pop("pruning", None),
        "pruning_defaulted": extra.pop("pruning_defaulted", False),
        "pruning_events": extra.pop("pruning_events", []),
        "parent": plan.parent_record,
        "final": _with_dynamic_rate(extra.pop("final", None), artifact.log),
        "log": artifact.log,
        "train_seconds": seconds,
        "provenance": collect(seed=plan.seed, command=command, device=device),
    }
    extra.pop("target_sparsity", None)
    extra.pop("achieved_sparsity", None)
    if extra:
        manifest["extra"] = extra  # whatever else a defense reports (e.g. DIO's heads)
    return artifact, to_jsonable(manifest)


def _with_dynamic_rate(final: dict | None, log: list[dict[str, Any]]) -> dict | None:
    """`final` plus the last epoch's dynamic (train-mode) dead-ReLU rate, beside the eval-mode one it holds."""
    rates = [e["dead_relu_rate_train"] for e in log if e.get("dead_relu_rate_train") is not None]
    if final is None or not rates:
        return final
    return {**final, "dead_relu_rate_train": rates[-1]}


def train_model(
    recipe: str | Recipe,
    dataset: str = "digits",
    sparsity: float = 0.0,
    parent: str | Path | nn.Module | None = None,
    seed: int = 0,
    epochs: int | None = None,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = False,
    command: list[str] | None = None,
    device: str | torch.device | None = None,
) -> tuple[Artifact, dict]:
    """Train one model from a recipe (name, path or Recipe); returns (Artifact, manifest). Writes nothing.

    `device`: where to train ("auto", "cpu", "cuda", "cuda:N", "mps"; None: the CPU); the trained model comes back
    on the CPU."""
    if device is not None:
        from robustprune.devices import resolve_device

        resolve_device(device)  # a bad or absent device is refused before anything is built
    plan = prepare(
        recipe, dataset=dataset, sparsity=sparsity, parent=parent, seed=seed, epochs=epochs, overrides=overrides
    )
    return execute(plan, progress=progress, command=command, device=device)


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"


def summary(manifest: dict) -> str:
    """The few lines `train` prints: what ran, final accuracy / PGD probe / dead-ReLU rate, achieved sparsity."""
    final = manifest.get("final") or {}
    probe = final.get("probe") or {}
    sp = manifest["sparsity"]
    pruning = manifest.get("pruning")
    plan = "dense"
    if pruning:
        plan = f"{pruning['criterion']} {pruning['schedule']}{' +reinit' if pruning['reinit'] else ''}"
    epochs = len(manifest["log"])
    head = (
        f"trained {manifest['recipe']['name']} (defense {manifest['defense']}, {manifest['architecture']}) on "
        f"{manifest['dataset']['name']}, seed {manifest['seed']}: {epochs} epoch{'s' * (epochs != 1)} in "
        f"{manifest['train_seconds']:.1f} s"
    )
    probe_text = (
        f"  val acc {_num(final.get('val_acc'))} | PGD acc {_num(final.get('pgd_acc'))} "
        f"(PGD-{probe.get('steps')} eps {probe.get('eps')}, first {probe.get('examples')} "
        f"{probe.get('split')} examples) | dead ReLU {_num(final.get('dead_relu_rate'))} eval, "
        f"{_num(final.get('dead_relu_rate_train'))} in training"
    )
    target = f"target {sp['target']:.4f}"
    if sp.get("target_unit") == "channels":
        channels = sp.get("channels") or {}
        target = f"channel sparsity {_num(channels.get('sparsity'))}, target {sp['target']:.4f} of channels"
    lines = [head, probe_text, f"  sparsity {sp['achieved']:.4f} achieved (weights), {target} ({plan})"]
    held = manifest["dataset"].get("validation")
    if held:
        lines.append(
            f"  validation: {held['val_examples']} examples held out ({held['fraction']:.0%}, stratified, seed "
            f"{held['seed']}): the dataset has no separate split"
        )
    if manifest.get("reconstruction"):
        lines.append(
            f"  {manifest['defense']} is a RECONSTRUCTION: not the published method (its paper could not be read)"
        )
    hit = next((e for e in manifest["log"] if e.get("catastrophic_overfitting")), None)
    if hit is not None:
        lines.append(
            f"  catastrophic overfitting at epoch {hit['epoch']}: stopped, restored epoch "
            f"{hit['restored_epoch']}'s weights"
        )
    return "\n".join(lines)


def save_trained(artifact: Artifact, manifest: dict, out_dir: str | Path) -> CheckpointInfo:
    """Write `out_dir/model.safetensors` (masks included) and its manifest, each atomically."""
    from robustprune.models import save_checkpoint

    return save_checkpoint(artifact.model, Path(out_dir) / CHECKPOINT_FILE, manifest)
