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

from robustprune.verify.bounds import CERTIFY_TOLERANCE, certified, margin_bounds
from robustprune.verify.milp import MARGIN_SLACK, exact_search, solver_name
from robustprune.verify.network import EQUAL_ATOL, EQUAL_RTOL, Network, NotVerifiable, walk

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
    n_unstable_mean: float = 0.0
    walk_gap: float = 0.0  # the largest difference of the walk's logits from the model's
    seconds_crown: float = 0.0
    seconds_exact: float = 0.0
    solver: str | None = None
    exact_skipped: str | None = None  # why the MILP did not run although asked for
    budget_exhausted: bool = False


def verifiable_network(model: nn.Module, x: Tensor, num_classes: int) -> tuple[Network, float]:
    """The model's walk, proved on every example of `x` (NotVerifiable otherwise), and the largest logit gap."""
    network = walk(model, x, num_classes)
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
    )
    x_cpu, y_cpu = x.detach().cpu(), y.detach().cpu()
    kept_bounds = {}
    started = time.perf_counter()
    unstable = []
    for i in np.flatnonzero(bound):
        interval, linear = margin_bounds(network, x_cpu[i], int(y_cpu[i]), norm, eps)
        # both bounds are sound: the larger counts (CROWN is the tighter one on every net measured; see bounds.py)
        linear.margins = torch.maximum(linear.margins, interval.margins)
        run.certified[i] = certified(linear)
        run.min_margin[i] = float(linear.margins.min()) if linear.margins.numel() else math.inf
        unstable.append(linear.n_unstable)
        if search is not None and search[i] and not run.certified[i]:
            kept_bounds[int(i)] = linear
        elif not run.certified[i]:
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
    "certify_examples",
    "project_linf",
    "verifiable_network",
]
