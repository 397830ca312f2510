"""Robust accuracy against eps from one minimum-norm attack run (FMN, robustprune.attacks.fmn).

Every number here is an UPPER BOUND on robust accuracy, from the named attack: an example counts as robust at eps
when the attack found no verified misclassified point within eps of it. A stronger attack can only lower the curve.

Relation to the fixed-eps battery: both are upper bounds on the same true robust accuracy, from different attacks,
so neither is guaranteed to lie below the other; the only guarantee is true <= min(curve(eps), battery). On the
test models FMN lands within a few points of PGD at the battery's eps (tests/scoring/test_eps_curve.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from robustprune.attacks.fmn import NORMS, fmn, perturbation_norm
from robustprune.config.eps import check_eps_grid, eps_grid_argument, parse_eps_grid  # noqa: F401  (re-export)
from robustprune.data import Dataset
from robustprune.errors import UsageError
from robustprune.models.modes import eval_mode
from robustprune.records import Record

VERIFY_SLACK = 1e-6
FMN_STEPS = 100


@dataclass
class EpsCurve(Record):
    """Robust accuracy (percent) at every eps of `grid`: UPPER BOUNDS from `attack`.

    distances: per scored example, the smallest verified adversarial distance found (0 for a clean-misclassified
        example; None, i.e. infinity, where none was found or it failed verification; JSON has no inf).
    robust_acc[i]: the share of examples correct clean whose distance is > grid[i].
    median_distance: the median minimal distance over clean-correct examples (None when that median is infinite).
    rejected: adversarial points that failed verification (re-predicted correct, outside the ball or the box),
        counted as not broken.
    """

    attack: str
    norm: str
    steps: int
    bound: str
    grid: list[float]
    robust_acc: list[float]
    clean_acc: float
    n_examples: int
    n_clean_correct: int
    n_found: int
    rejected: int
    median_distance: float | None
    distances: list[float | None] = field(default_factory=list)
    seconds: float = 0.0

    def distance_array(self) -> np.ndarray:
        return np.array([math.inf if d is None else d for d in self.distances], dtype=np.float64)

    def line(self) -> str:
        """One line for people."""
        points = ", ".join(f"{_fmt(e)}: {a:.1f}" for e, a in zip(self.grid, self.robust_acc))
        median = "inf (none found)" if self.median_distance is None else f"{self.median_distance:.3g}"
        rejected = f"; {self.rejected} rejected by verification" if self.rejected else ""
        return (
            f"robust accuracy vs eps (upper bounds from {self.attack}, {self.steps} steps): {points}; "
            f"median minimal perturbation {median}{rejected}"
        )


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def curve_from_distances(distances: np.ndarray, clean_correct: np.ndarray, grid: list[float]) -> list[float]:
    """Robust accuracy (percent) at each eps: correct clean and minimal distance > eps."""
    n = max(len(distances), 1)
    return [100.0 * float((clean_correct & (distances > eps)).sum()) / n for eps in grid]


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])


def min_norm_curve(
    model: nn.Module,
    data: Dataset,
    norm: str,
    grid: list[float],
    *,
    seed: int = 0,
    batch_size: int = 256,
    steps: int = FMN_STEPS,
) -> EpsCurve:
    """Run FMN on the clean-correct examples of `data` and derive robust accuracy at every eps of `grid` (upper
    bounds), verifying every adversarial point: re-predicted misclassified, within its distance (+1e-6) of the
    clean input in `norm`, inside [0, 1]. Points failing verification count as not broken (`rejected`)."""
    import time

    if norm not in NORMS:
        raise UsageError(f"the eps curve supports norms {', '.join(NORMS)}, got {norm!r}")
    grid = check_eps_grid(grid)
    started = time.perf_counter()
    x, y = data.x, data.y
    n = len(y)
    distances = np.full(n, math.inf)
    rejected = 0
    with eval_mode(model):
        pred = _predict(model, x, batch_size)
        correct = (pred == y).cpu().numpy()
        distances[~correct] = 0.0
        index = np.flatnonzero(correct)
        for start in range(0, len(index), batch_size):
            rows = torch.as_tensor(index[start : start + batch_size], device=x.device)
            xb, yb = x[rows], y[rows]
            result = fmn(model, xb, yb, norm=norm, steps=steps, seed=seed + start)
            found = result.found
            if not bool(found.any()):
                continue
            adv_pred = _predict(model, result.x_adv, batch_size)
            actual = perturbation_norm(result.x_adv - xb, norm)
            in_box = (result.x_adv >= 0).flatten(1).all(dim=1) & (result.x_adv <= 1).flatten(1).all(dim=1)
            ok = found & (adv_pred != yb) & (actual <= result.distance + VERIFY_SLACK) & in_box
            rejected += int((found & ~ok).sum())
            chosen = rows[ok].cpu().numpy()
            distances[chosen] = result.distance[ok].double().cpu().numpy()
    correct_distances = distances[correct]
    median = float(np.median(correct_distances)) if correct_distances.size else math.inf
    return EpsCurve(
        attack=f"FMN-{norm}",
        norm=norm,
        steps=steps,
        bound="upper",
        grid=grid,
        robust_acc=curve_from_distances(distances, correct, grid),
        clean_acc=100.0 * float(correct.mean()) if n else 0.0,
        n_examples=n,
        n_clean_correct=int(correct.sum()),
        n_found=int(np.isfinite(correct_distances).sum()),
        rejected=rejected,
        median_distance=median if math.isfinite(median) else None,
        distances=[float(d) if math.isfinite(d) else None for d in distances],
        seconds=time.perf_counter() - started,
    )
