"""Activating-while-Pruning (AP; Liu et al., arXiv 2212.06145; algorithms.md §4.4 and §6): the add-on step that
spends part of a pruning round's budget on weights that keep units dead.

After a round of training, among the weights that survive and are negative, those that moved least during the
round (smallest |theta - theta_start|) are removed: a negative weight that training left alone only pushes
pre-activations down, so removing it lowers the dynamic dead-neuron rate. The base criterion takes the rest of the
round's increment. This module is the selection alone; `robustprune.defenses.pruning_driver` runs the rounds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustprune.errors import UsageError
from robustprune.sparsity.masks import current_masks, effective_weight, prunable_modules


def snapshot_weights(model: nn.Module, names: list[str] | tuple[str, ...]) -> dict[str, Tensor]:
    """The effective weights of the named prunable layers (a round's theta_start), detached copies."""
    modules = dict(prunable_modules(model))
    return {name: effective_weight(modules[name]).clone() for name in names}


def ap_candidates(model: nn.Module, start: dict[str, Tensor]) -> int:
    """How many weights AP may choose from: alive (unmasked) and negative, in the layers of `start`."""
    modules, masks = dict(prunable_modules(model)), current_masks(model)
    return sum(int(((effective_weight(modules[n]) < 0) & masks[n]).sum()) for n in start)


def ap_masks(model: nn.Module, start: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """Masks for the layers of `start` that additionally remove the `k` alive negative weights with the smallest
    |theta - theta_start| (one ranking across those layers; ties broken by position, so the choice is
    deterministic). `k` above the number of candidates is a UsageError (the caller caps it)."""
    if k < 0:
        raise UsageError(f"AP must remove a non-negative number of weights, got {k}")
    modules, masks = dict(prunable_modules(model)), current_masks(model)
    moved, eligible, shapes = [], [], []
    for name, before in start.items():
        now = effective_weight(modules[name])
        if now.shape != before.shape:
            raise UsageError(f"AP: layer {name!r} changed shape during the round")
        moved.append((now - before).abs().flatten().double().cpu())
        eligible.append(((now < 0) & masks[name]).flatten().cpu())
        shapes.append((name, now.shape))
    flat_moved, flat_ok = torch.cat(moved), torch.cat(eligible)
    available = int(flat_ok.sum())
    if k > available:
        raise UsageError(f"AP asked to remove {k} weights but only {available} alive negative weights exist")
    keep = torch.cat([masks[name].flatten().cpu() for name in start])
    if k:
        score = torch.where(flat_ok, flat_moved, torch.full_like(flat_moved, float("inf")))
        keep[torch.argsort(score, stable=True)[:k]] = False
    out, offset = {}, 0
    for name, shape in shapes:
        n = shape.numel()
        out[name] = keep[offset : offset + n].view(shape).to(masks[name].device)
        offset += n
    return out
