"""Unstructured pruning criteria: a registry of mask builders.

A criterion is `fn(model, sparsity, generator=None, *, exclude=()) -> masks`: bool masks keyed by module name for
every prunable layer not in `exclude`, with exactly round(sparsity * eligible weights) zeros. Scores come from the
effective weight, so entries already pruned score 0 and stay pruned when the target grows. Apply the result with
`robustprune.sparsity.apply_masks`. Adding a criterion: one function registered in PRUNING_CRITERIA.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustprune.errors import UsageError
from robustprune.registry import Registry
from robustprune.sparsity.masks import check_sparsity, effective_weight, prunable_modules

Criterion = Callable[..., dict[str, Tensor]]
PRUNING_CRITERIA: Registry[Criterion] = Registry("pruning criterion")


def _eligible(model: nn.Module, exclude: tuple[str, ...] | list[str]) -> list[tuple[str, Tensor]]:
    """(name, effective weight) for the prunable layers not excluded; unknown exclude names fail (typo safety)."""
    if isinstance(exclude, str):
        exclude = (exclude,)  # a bare string would otherwise be read as a sequence of characters
    layers = prunable_modules(model)
    known = {name for name, _ in layers}
    unknown = sorted(set(exclude) - known)
    if unknown:
        raise UsageError(f"exclude names unknown prunable layers {unknown}; prunable: {', '.join(sorted(known))}")
    chosen = [(name, effective_weight(m)) for name, m in layers if name not in set(exclude)]
    if not chosen:
        raise UsageError("no prunable layer is left to prune (all Conv/Linear layers excluded or none present)")
    return chosen


def _masks_from_scores(layers: list[tuple[str, Tensor]], scores: Tensor, n_prune: int) -> dict[str, Tensor]:
    """Prune the n_prune lowest scores of the flat concatenation; a stable sort breaks ties by position."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_prune:
        keep[torch.argsort(scores, stable=True)[:n_prune]] = False
    masks: dict[str, Tensor] = {}
    offset = 0
    for name, w in layers:
        masks[name] = keep[offset : offset + w.numel()].view(w.shape).to(w.device)
        offset += w.numel()
    return masks


@PRUNING_CRITERIA.register("global_magnitude")
def global_magnitude(
    model: nn.Module, sparsity: float, generator: torch.Generator | None = None, *, exclude: tuple[str, ...] = ()
) -> dict[str, Tensor]:
    """One |w| threshold across all eligible layers (can leave layers very unevenly pruned; report per layer)."""
    s = check_sparsity(sparsity)
    layers = _eligible(model, exclude)
    scores = torch.cat([w.abs().flatten().cpu().double() for _, w in layers])
    return _masks_from_scores(layers, scores, round(s * scores.numel()))


def _apportion(sizes: list[int], s: float) -> list[int]:
    """Per-layer prune counts near s*size whose sum is exactly round(s*sum(sizes)) (largest remainder)."""
    exact = [s * n for n in sizes]
    counts = [math.floor(e) for e in exact]
    extra = round(s * sum(sizes)) - sum(counts)
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: max(extra, 0)]:
        counts[i] = min(counts[i] + 1, sizes[i])
    return counts


@PRUNING_CRITERIA.register("layerwise_magnitude")
def layerwise_magnitude(
    model: nn.Module, sparsity: float, generator: torch.Generator | None = None, *, exclude: tuple[str, ...] = ()
) -> dict[str, Tensor]:
    """The same fraction of each eligible layer, lowest |w| first (each layer within one weight of s*numel)."""
    s = check_sparsity(sparsity)
    layers = _eligible(model, exclude)
    counts = _apportion([w.numel() for _, w in layers], s)
    masks: dict[str, Tensor] = {}
    for (name, w), k in zip(layers, counts, strict=True):
        masks.update(_masks_from_scores([(name, w)], w.abs().flatten().cpu().double(), k))
    return masks


@PRUNING_CRITERIA.register("random")
def random_pruning(
    model: nn.Module, sparsity: float, generator: torch.Generator | None = None, *, exclude: tuple[str, ...] = ()
) -> dict[str, Tensor]:
    """Global uniform random pruning of exactly round(s*total) weights; already-zero weights are taken first.

    Deterministic for a seeded CPU `generator` (scores are drawn on the CPU); None uses torch's global RNG.
    """
    s = check_sparsity(sparsity)
    layers = _eligible(model, exclude)
    flat = torch.cat([w.flatten().cpu() for _, w in layers])
    scores = torch.rand(flat.numel(), generator=generator)
    scores[flat == 0] -= 1.0  # scores in [-1, 0) sort before all live weights
    return _masks_from_scores(layers, scores, round(s * flat.numel()))


# ---------------------------------------------------------------------------------------------------- schedules
