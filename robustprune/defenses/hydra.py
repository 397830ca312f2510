"""`hydra`: HYDRA (Sehwag, Wang, Mittal, Jana; NeurIPS'20, arXiv 2002.10509; algorithms.md §4.1), pruning-aware
robust training: which weights to keep is *learned* with the robust loss, not read off their magnitudes.

From a trained (robust) parent, with its weights frozen:
1. every prunable layer gets a real-valued importance score per weight, initialised as in the reference
   (`scaled-score-init`): s = sqrt(6 / fan_in) * w / max|w| per layer, so the first mask equals the magnitude mask;
2. the forward pass uses w * m(s), m = the top-k of |s| (layer-wise by default, as `models/layers.py` of
   `inspire-group/hydra`; k = the kept share), and the backward pass is a straight-through estimator (the gradient
   with respect to the mask is handed to s); only the scores train, `score_epochs` epochs with the robust loss
   (TRADES by default, or PGD-AT) at `score_lr`;
3. the final top-k of |s| becomes the mask (attached as ordinary prune masks), and the surviving weights are
   fine-tuned with the same robust loss for train.epochs epochs at train.lr.
The manifest records how much the learned mask differs from the magnitude mask it started from.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from robustprune.data import Dataset
from robustprune.defenses.base import DEFENSES, Artifact, Defense, Recipe, register_defense
from robustprune.defenses.pruning_driver import (
    achieved_sparsity,
    check_achieved,
    copy_weights,
    final_metrics,
)
from robustprune.defenses.train_loop import Loss, fit
from robustprune.errors import UsageError
from robustprune.sparsity import apply_masks, check_sparsity, prunable_modules, remove_masks
from robustprune.sparsity.criteria import _apportion

LOSSES = ("trades", "pgd_at")
SCOPES = ("layerwise", "global")


class _TopKMask(torch.autograd.Function):
    """Binary mask of the `keep` largest |scores| forward; the gradient passes straight through backward."""

    @staticmethod
    def forward(ctx: Any, scores: Tensor, keep: int) -> Tensor:  # type: ignore[override]
        mask = torch.zeros_like(scores)
        if keep:
            mask.view(-1)[torch.argsort(scores.abs().flatten(), descending=True, stable=True)[:keep]] = 1.0
        return mask

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class ScoredWeight(nn.Module):
    """A parametrization of a layer's `weight`: weight * top-k(|scores|), scores trainable, weight frozen."""

    def __init__(self, weight: Tensor, keep: int) -> None:
        super().__init__()
        fan_in = weight[0].numel()
        scale = weight.abs().max().clamp_min(1e-12)
        self.scores = nn.Parameter(math.sqrt(6.0 / fan_in) * weight.detach() / scale)
        self.keep = keep

    def forward(self, weight: Tensor) -> Tensor:
        return weight * _TopKMask.apply(self.scores, self.keep)

    def mask(self) -> Tensor:
        with torch.no_grad():
            return _TopKMask.apply(self.scores, self.keep).bool()


def keep_counts(model: nn.Module, sparsity: float) -> dict[str, int]:
    """Weights each layer keeps: the same share of every layer (within one weight; the total is exact)."""
    layers = prunable_modules(model)
    pruned = _apportion([m.weight.numel() for _, m in layers], sparsity)
    return {name: m.weight.numel() - k for (name, m), k in zip(layers, pruned, strict=True)}


def attach_scores(model: nn.Module, sparsity: float) -> dict[str, ScoredWeight]:
    """Freeze every parameter and parametrize each prunable layer's weight by its scores (layer-wise top-k)."""
    remove_masks(model)  # a sparse parent's zeros become plain zeros: score 0, never chosen while others remain
    for p in model.parameters():
        p.requires_grad_(False)
    counts = keep_counts(model, sparsity)
    scored = {}
    for name, module in prunable_modules(model):
        scored[name] = ScoredWeight(module.weight, counts[name])
        parametrize.register_parametrization(module, "weight", scored[name])
    return scored


def global_keep(scored: dict[str, ScoredWeight], sparsity: float) -> None:
    """Global scope: one top-k across layers, its per-layer shares written into each ScoredWeight's `keep`."""
    flat = torch.cat([s.scores.detach().abs().flatten() for s in scored.values()])
    keep_total = flat.numel() - round(sparsity * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[torch.argsort(flat, descending=True, stable=True)[:keep_total]] = True
    offset = 0
    for s in scored.values():
        n = s.scores.numel()
        s.keep = int(chosen[offset : offset + n].sum())
        offset += n


def detach_scores(model: nn.Module, scored: dict[str, ScoredWeight]) -> dict[str, Tensor]:
    """Remove the parametrizations (the original weights come back) and return the learned masks."""
    masks = {name: s.mask() for name, s in scored.items()}
    modules = dict(prunable_modules(model))
    for name in scored:
        parametrize.remove_parametrizations(modules[name], "weight", leave_parametrized=False)
    for p in model.parameters():
        p.requires_grad_(True)
    return masks


@register_defense("hydra")
class Hydra(Defense):
    # Digits defaults; reference (CIFAR-10): TRADES beta 6, eps 0.031, 10 steps of 0.0078, 20 score epochs at lr 0.1,
    # fine-tuning at lr 0.01, cosine, wd 1e-4, batch 128.
    defaults = {
        "loss": "trades",
        "beta": 6.0,
        "eps": 0.1,
        "alpha": 0.025,
        "steps": 7,
        "score_epochs": 5,
        "score_lr": 1.0,
        "scope": "layerwise",
    }

    def validate(self) -> None:
        where = f"recipe {self.recipe.name!r} [settings]"
        if self.settings["loss"] not in LOSSES:
            raise UsageError(f"{where} loss must be one of {', '.join(LOSSES)}, got {self.settings['loss']!r}")
        if self.settings["scope"] not in SCOPES:
            raise UsageError(f"{where} scope must be one of {', '.join(SCOPES)}, got {self.settings['scope']!r}")
        if not 0 < float(self.settings["eps"]) <= 1:
            raise UsageError(f"{where} eps must be in (0, 1], got {self.settings['eps']}")
        for key in ("alpha", "steps", "score_epochs", "score_lr"):
            if not float(self.settings[key]) > 0:
                raise UsageError(f"{where} {key} must be > 0, got {self.settings[key]}")
        if self.recipe.pruning is not None:
            raise UsageError(f"{where}: hydra chooses its own mask from learned scores; remove the [pruning] table")
        self.robust_loss_defense()  # the loss's own checks (beta >= 0, ...)

    def robust_loss_defense(self) -> Defense:
        """The PGD-AT or TRADES defense whose loss HYDRA optimises, with this recipe's attack settings."""
        keys = {"trades": ("beta", "eps", "alpha", "steps"), "pgd_at": ("eps", "alpha", "steps")}
        name = str(self.settings["loss"])
        settings = {key: self.settings[key] for key in keys[name]}
        return DEFENSES.get(name)(Recipe(name=f"{self.recipe.name}:{name}", defense=name, settings=settings))

    def make_loss(self, train: Dataset) -> Loss:
        return self.robust_loss_defense().make_loss(train)  # type: ignore[attr-defined]

    def run(
        self,
        model: nn.Module,
        train: Dataset,
        val: Dataset,
        *,
        sparsity: float,
        parent: nn.Module | None,
        seed: int,
        progress: bool = False,
    ) -> Artifact:
        sparsity = check_sparsity(sparsity)
        if parent is None:
            raise UsageError(f"recipe {self.recipe.name!r} (hydra) prunes a trained parent: pass --parent")
        copy_weights(parent, model)
        loss = self.make_loss(train)
        events: list[dict[str, Any]] = [{"event": "start_from_parent", "sparsity": achieved_sparsity(model)}]
        scored = attach_scores(model, sparsity)
        if self.settings["scope"] == "global":
            global_keep(scored, sparsity)
        initial = {name: s.mask() for name, s in scored.items()}  # the magnitude mask (scores start at scaled |w|)
        score_spec = replace(
            self.recipe.train, epochs=int(self.settings["score_epochs"]), lr=float(self.settings["score_lr"])
        )
        score_log = fit(model, train, val, score_spec, loss=loss, seed=seed, progress=progress)
        masks = detach_scores(model, scored)
        changed = sum(int((masks[n] != initial[n]).sum()) for n in masks) // 2  # each swap moves one in, one out
        kept = sum(int(m.sum()) for m in masks.values())
        apply_masks(model, masks)
        events.append(
            {
                "event": "prune",
                "criterion": "hydra_scores",
                "target": sparsity,
                "achieved": achieved_sparsity(model),
                "swapped_vs_magnitude": changed,
                "swapped_share_of_kept": changed / kept if kept else 0.0,
            }
        )
        log = [{**entry, "stage": "scores"} for entry in score_log]
        tune_log = fit(model, train, val, self.recipe.train, loss=loss, seed=seed + 1, progress=progress)
        log += [{**entry, "stage": "fine_tune", "epoch": len(score_log) + entry["epoch"]} for entry in tune_log]
        achieved = check_achieved(model, sparsity)
        model.eval()
        pruning = {
            "criterion": "hydra_scores",
            "schedule": f"hydra ({self.settings['scope']})",
            "reinit": False,
            "score_epochs": int(self.settings["score_epochs"]),
        }
        return Artifact(
            model=model,
            log=log,
            extra={
                "settings": dict(self.settings),
                "pruning": pruning,
                "pruning_events": events,
                "target_sparsity": sparsity,
                "achieved_sparsity": achieved,
                "final": final_metrics(model, val, self.recipe),
            },
        )
