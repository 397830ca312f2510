"""Unstructured pruning criteria (a registry of mask builders) and sparsity schedules (pure functions of step).

A criterion is `fn(model, sparsity, generator=None, *, exclude=()) -> masks`: bool masks keyed by module name for
every prunable layer not in `exclude`, with exactly round(sparsity * eligible weights) zeros. Scores come from the
effective weight, so entries already pruned score 0 and stay pruned when the target grows. Apply the result with
`robustprune.sparsity.apply_masks`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustprune.errors import UsageError
from robustprune.registry import Registry
from robustprune.sparsity import effective_weight, prunable_modules

Criterion = Callable[..., dict[str, Tensor]]
PRUNING_CRITERIA: Registry[Criterion] = Registry("pruning criterion")

__all__ = [
    "PRUNING_CRITERIA",
    "agp_sparsity",
    "check_sparsity",
    "global_magnitude",
    "iterative_sparsities",
    "layerwise_magnitude",
    "one_cycle_sparsity",
    "random_pruning",
]


def check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    """A sparsity as float in [0, 1); anything else is a UsageError (1.0 would delete every weight)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0.0 <= float(sparsity) < 1.0:
        raise UsageError(f"{what} {sparsity!r} is impossible: use a value in [0, 1)")
    return float(sparsity)


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


def _check_steps(**values: float) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise UsageError(f"{name} must be a finite number, got {v!r}")


def agp_sparsity(step: float, s_init: float, s_final: float, t0: float, n_steps: int, dt: float = 1) -> float:
    """Automated Gradual Pruning (Zhu & Gupta 2017; algorithms.md §4.2(b)), the cubic schedule
    s_t = s_f + (s_i − s_f)·(1 − (t − t0)/(n·Δt))³, equal to s_i before t0 and s_f after t0 + n·Δt.

    Continuous in t: the caller updates masks only every Δt steps (and stops after t0 + n·Δt).
    """
    _check_steps(step=step, t0=t0, dt=dt)
    s_i, s_f = check_sparsity(s_init, "s_init"), check_sparsity(s_final, "s_final")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1 or dt <= 0:
        raise UsageError(f"AGP needs n_steps >= 1 and dt > 0, got n_steps={n_steps!r}, dt={dt!r}")
    progress = min(max((step - t0) / (n_steps * dt), 0.0), 1.0)
    return s_f + (s_i - s_f) * (1.0 - progress) ** 3


def one_cycle_sparsity(
    step: float, total_steps: float, s_final: float, alpha: float = 14.0, beta: float = 6.0, s_init: float = 0.0
) -> float:
    """One-Cycle Pruning's logistic schedule (Hubens et al.; algorithms.md §4.3(b), fasterai `sched_onecycle`):
    with p = t/T clamped to [0, 1], s(p) = s_i + (s_f − s_i)·(1 + e^{−α+β}) / (1 + e^{−α·p+β}).

    s(1) = s_f exactly; s(0) = s_i + (s_f − s_i)·(1 + e^{−8})/(1 + e^{6}) ≈ s_i + 0.0025·(s_f − s_i) for α=14, β=6
    (the formula as published, not forced to s_i).
    """
    _check_steps(step=step, total_steps=total_steps, alpha=alpha, beta=beta)
    s_i, s_f = check_sparsity(s_init, "s_init"), check_sparsity(s_final, "s_final")
    if total_steps <= 0:
        raise UsageError(f"total_steps must be > 0, got {total_steps!r}")
    p = min(max(step / total_steps, 0.0), 1.0)
    return s_i + (s_f - s_i) * (1.0 + math.exp(-alpha + beta)) / (1.0 + math.exp(-alpha * p + beta))


def iterative_sparsities(s_final: float, n_rounds: int) -> list[float]:
    """Targets after rounds r = 1..R of iterative magnitude pruning: 1 − (1 − s_f)^(r/R), so every round keeps
    the same fraction (1 − s_f)^(1/R) of the surviving weights; the last target is s_final exactly."""
    s_f = check_sparsity(s_final, "s_final")
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, int) or n_rounds < 1:
        raise UsageError(f"n_rounds must be a positive int, got {n_rounds!r}")
    targets = [1.0 - (1.0 - s_f) ** (r / n_rounds) for r in range(1, n_rounds + 1)]
    targets[-1] = s_f  # no float drift on the final target
    return targets
