"""Bounds for the scored examples: CROWN on every correctly classified one, then (for `exact`) the MILP on those
that neither an attack broke nor CROWN certified, within a time limit per example and a budget in all.

The walk is proved equal to the model on every scored example before anything is certified. What comes back is
per example: `certified` (CROWN), `proved` (MILP), a MILP counterexample (to be replayed through the engine,
which verifies it like any attack's), or `unknown` with the reason; the scorer merges that with the battery.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from robustprune.verify.bounds import (
    CERTIFY_TOLERANCE,
    Bounds,
    batch_bounds,
    certified_rows,
    chunk_size,
    full_crown,
)
from robustprune.verify.milp import MARGIN_SLACK, MAX_PROGRAM_NONZEROS, exact_search, program_size, solver_name
from robustprune.verify.network import EQUAL_ATOL, EQUAL_RTOL, MAX_NEURONS, Affine, Network, NotVerifiable, walk

EQUAL_BATCH = 512


@dataclass
class CertifyRun:
    """What the bounds found, aligned with the scored examples."""

    method: str  # crown | exact
    certified: np.ndarray  # bool: CROWN's margins all above the tolerance
    proved: np.ndarray  # bool: the MILP found no adversarial example
    counterexamples: dict[int, Tensor] = field(default_factory=dict)  # example -> MILP point (input shape, float64)
    unknown_reason: dict[int, str] = field(default_factory=dict)  # example -> why it is undecided
    min_margin: np.ndarray | None = None  # CROWN's lowest margin bound per example (nan where not bounded)
    n_relus: int = 0
    intermediate: str = "crown"  # where the pre-activation bounds come from: crown, or ibp (CROWN-IBP, large nets)
    n_unstable_mean: float = 0.0
    walk_gap: float = 0.0  # the largest difference of the walk's logits from the model's
    seconds_crown: float = 0.0
    seconds_exact: float = 0.0
    solver: str | None = None
    exact_skipped: str | None = None  # why the MILP did not run although asked for
    budget_exhausted: bool = False


def verifiable_network(
    model: nn.Module, x: Tensor, num_classes: int, max_relus: int = MAX_NEURONS
) -> tuple[Network, float]:
    """The model's walk, proved on every example of `x` (NotVerifiable otherwise), and the largest logit gap."""
    network = walk(model, x, num_classes, max_relus)
    gap = 0.0
    for start in range(0, len(x), EQUAL_BATCH):
        gap = max(gap, network.check_equal(model, x[start : start + EQUAL_BATCH]))
    return network, gap


def certify_examples(
    network: Network,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float,
    bound: np.ndarray,
    search: np.ndarray | None,
    time_limit: float,
    budget: float,
) -> CertifyRun:
    """CROWN on the examples marked in `bound`; with `search` (exact), the MILP on those of them CROWN leaves, in
    order, each within `time_limit` seconds and all within `budget` seconds (what is not reached stays unknown)."""
    n = len(y)
    run = CertifyRun(
        method="exact" if search is not None else "crown",
        certified=np.zeros(n, bool),
        proved=np.zeros(n, bool),
        min_margin=np.full(n, np.nan),
        n_relus=network.n_relus,
        intermediate="crown" if full_crown(network) else "ibp",
    )
    full = run.intermediate == "crown"
    x_cpu, y_cpu = x.detach().cpu(), y.detach().cpu()
    kept_bounds = {}
    started = time.perf_counter()
    unstable = []
    for chunk in _chunks(np.flatnonzero(bound), chunk_size(network, full)):
        linear = _bounds(network, x_cpu[chunk], y_cpu[chunk], norm, eps, full)
        proven = certified_rows(linear).numpy()
        for row, i in enumerate(chunk):
            run.certified[i] = proven[row]
            run.min_margin[i] = float(linear.margins[row].min()) if linear.margins.shape[1] else math.inf
            one = linear.example(row)
            unstable.append(one.n_unstable)
            if search is not None and search[i] and not proven[row]:
                kept_bounds[int(i)] = one
            elif not proven[row]:
                run.unknown_reason[int(i)] = "not certified by CROWN (no exact search asked for)"
    run.seconds_crown = time.perf_counter() - started
    run.n_unstable_mean = float(np.mean(unstable)) if unstable else 0.0
    if search is None:
        return run
    if norm != "Linf":
        run.exact_skipped = f"the exact search supports Linf only ({norm} gets bounds only)"
        for i in kept_bounds:
            run.unknown_reason[i] = "not certified by CROWN; the exact search supports Linf only"
        return run
    size = program_size(network)
    if size > MAX_PROGRAM_NONZEROS:
        run.exact_skipped = (
            f"the MILP would hold {size:,} non-zero weights, beyond the {MAX_PROGRAM_NONZEROS:,} it builds"
        )
        for i in kept_bounds:
            run.unknown_reason[i] = f"not certified by CROWN; {run.exact_skipped}"
        return run
    run.solver = solver_name()
    started = time.perf_counter()
    for i, linear in kept_bounds.items():
        left = budget - (time.perf_counter() - started)
        if left <= 0:
            run.budget_exhausted = True
            run.unknown_reason[i] = f"the exact budget ({budget:g} s) was spent before this example"
            continue
        outcome = exact_search(network, linear, x_cpu[i], int(y_cpu[i]), eps, time_limit=min(time_limit, left))
        if outcome.status == "proved":
            run.proved[i] = True
        elif outcome.status == "counterexample":
            run.counterexamples[i] = outcome.x.reshape(x_cpu[i].shape)
        else:
            run.unknown_reason[i] = (
                f"the exact search reached its time limit ({min(time_limit, left):.3g} s) after "
                f"{outcome.targets_solved} of {network.num_classes - 1} targets"
            )
    run.seconds_exact = time.perf_counter() - started
    return run


# What the lower eps curve may cost: bounds (examples x eps points) times the network's matrix entries, a measure
# of one bound's work (the digits mlp: 50,000 entries, 40,000 bounds; digits_cnn: 52 M entries, 38 bounds).
MAX_CURVE_WORK = 2_000_000_000


def certified_curve(
    network: Network, x: Tensor, y: Tensor, correct: np.ndarray, norm: str, grid: list[float]
) -> tuple[list[float] | None, str | None]:
    """Certified robust accuracy (CROWN, %, a LOWER bound) at every eps of `grid`, over all the examples (the
    misclassified count as not robust); (None, why) when it would cost more than MAX_CURVE_WORK."""
    todo = np.flatnonzero(correct)
    entries = sum(p.weight.numel() for p in network.pieces if isinstance(p, Affine))
    if len(todo) * len(grid) * entries > MAX_CURVE_WORK:
        return None, (
            f"{len(todo):,} examples x {len(grid)} eps points on a network of {entries:,} matrix entries are beyond "
            "what the lower curve computes"
        )
    x_cpu, y_cpu = x.detach().cpu(), y.detach().cpu()
    full = full_crown(network)
    curve = []
    for eps in grid:
        proven = 0
        for chunk in _chunks(todo, chunk_size(network, full)):
            proven += int(certified_rows(_bounds(network, x_cpu[chunk], y_cpu[chunk], norm, float(eps), full)).sum())
        curve.append(100.0 * proven / len(y_cpu) if len(y_cpu) else 0.0)
    return curve, None


def _bounds(network: Network, x: Tensor, y: Tensor, norm: str, eps: float, full: bool) -> Bounds:
    """CROWN's bounds of a chunk of examples, each margin the larger of CROWN's and IBP's (both are sound; CROWN is
    the tighter on every net measured, tests/verify)."""
    interval, linear = batch_bounds(network, x, [int(v) for v in y], norm, eps, intermediate=full)
    linear.margins = torch.maximum(linear.margins, interval.margins)
    return linear


def _chunks(indices: np.ndarray, size: int) -> list[np.ndarray]:
    return [indices[start : start + size] for start in range(0, len(indices), size)]


def project_linf(point: Tensor, x: Tensor, eps: float) -> Tensor:
    """A MILP point back into the Linf ball and the box exactly (the solver satisfies its bounds only within its
    feasibility tolerance), in the examples' dtype."""
    x64 = x.detach().double().cpu()
    inside = torch.minimum(torch.maximum(point.double(), x64 - eps), x64 + eps).clamp(0, 1)
    return inside.to(dtype=x.dtype)


__all__ = [
    "CERTIFY_TOLERANCE",
    "EQUAL_ATOL",
    "EQUAL_RTOL",
    "MARGIN_SLACK",
    "CertifyRun",
    "NotVerifiable",
    "certified_curve",
    "certify_examples",
    "project_linf",
    "verifiable_network",
]
