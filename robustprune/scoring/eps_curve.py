"""Robust accuracy against eps from one run of minimum-norm attacks (robustprune.attacks.min_norm: FMN and FAB).

Every number here is an UPPER BOUND on robust accuracy, from the named attacks: an example counts as robust at eps
when no attack found a verified misclassified point within eps of it. Each example's distance is the smallest
verified one over the attacks run; a stronger attack can only lower the curve.

Relation to the fixed-eps battery: `score` merges the battery's own verified adversarial points (found within its
eps) into the curve, so at the battery's eps the curve is never above the battery's robust accuracy (for a
deterministic model, up to the engine's 1e-6 norm tolerance), and wherever a minimum-norm attack went further, the
curve shows it. The battery's number stays the headline.

Randomized models: clean correctness and misclassification are judged over `n_passes` forward passes, as the
battery judges them (correct only when correct on every pass), so one wrong pass at a point breaks the example.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from robustprune.attacks.counting import CountingModel
from robustprune.attacks.fmn import NORMS, perturbation_norm
from robustprune.attacks.min_norm import DEFAULT_MIN_NORM, MIN_NORM_ATTACKS
from robustprune.attacks.verify import NORM_TOLERANCE
from robustprune.config.battery import EPS_CURVE_STEPS
from robustprune.config.eps import check_eps_grid, eps_grid_argument, parse_eps_grid  # noqa: F401  (re-export)
from robustprune.data import Dataset
from robustprune.errors import UsageError
from robustprune.models.modes import eval_mode
from robustprune.records import Record, optional_field

VERIFY_SLACK = NORM_TOLERANCE  # 1e-6, as robustprune.attacks.verify
MIN_NORM_STEPS = EPS_CURVE_STEPS


@dataclass
class MinNormRun(Record):
    """One minimum-norm attack's share of a curve: how many examples it broke (verified), how many of its points
    failed verification, its median distance over clean-correct examples, and on how many examples it gave the
    smallest distance of all the attacks (ties go to the attack listed first)."""

    attack: str
    n_found: int
    rejected: int
    median_distance: float | None
    closest: int
    seconds: float = 0.0


@dataclass
class EpsCurve(Record):
    """Robust accuracy (percent) at every eps of `grid`: UPPER BOUNDS from `attack` (the attacks joined by '+').

    distances: per scored example, the smallest verified adversarial distance found by any attack (0 for a
        clean-misclassified example; None, i.e. infinity, where none was found or it failed verification; JSON has
        no inf).
    robust_acc[i]: the share of examples correct clean whose distance is > grid[i] (+ the 1e-6 tolerance).
    median_distance: the median minimal distance over clean-correct examples (None when that median is infinite).
    rejected: adversarial points that failed verification (re-predicted correct, or outside the box), counted as
        not broken, over all attacks.
    runs: each attack's own numbers.
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
    runs: list[MinNormRun] = field(default_factory=list)
    n_passes: int = 1
    caveat: str | None = None  # set when the evaluation this curve comes from is not trusted
    # CROWN's certified robust accuracy at every eps of the grid (LOWER bounds), where the score's bounds ran
    certified_acc: list[float] | None = optional_field()
    certified_skipped: str | None = optional_field()  # why bounds ran but the lower curve was not computed
    seconds: float = 0.0
    n_forward: int = 0  # passes the curve spent on the model, in examples (part of the score's cost)
    n_backward: int = 0

    def distance_array(self) -> np.ndarray:
        return np.array([math.inf if d is None else d for d in self.distances], dtype=np.float64)

    def line(self) -> str:
        """One line for people."""
        points = ", ".join(f"{_fmt(e)}: {a:.1f}" for e, a in zip(self.grid, self.robust_acc))
        median = "inf (none found)" if self.median_distance is None else f"{self.median_distance:.3g}"
        rejected = f"; {self.rejected} rejected by verification" if self.rejected else ""
        closest = ", ".join(f"{r.attack} {r.closest}" for r in self.runs) if len(self.runs) > 1 else ""
        closest = f"; closest found by {closest}" if closest else ""
        passes = f"; judged over {self.n_passes} passes (randomized model)" if self.n_passes > 1 else ""
        caveat = f" -- CAUTION: {self.caveat}" if self.caveat else ""
        lower = ""
        if self.certified_acc:
            lower = "; certified (CROWN, lower bounds): " + ", ".join(
                f"{_fmt(e)}: {a:.1f}" for e, a in zip(self.grid, self.certified_acc)
            )
        return (
            f"robust accuracy vs eps, {self.norm} (upper bounds from {self.attack}, {self.steps} steps): {points}; "
            f"median minimal perturbation {median}{closest}{rejected}{passes}{lower}{caveat}"
        )


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def curve_from_distances(distances: np.ndarray, clean_correct: np.ndarray, grid: list[float]) -> list[float]:
    """Robust accuracy (percent) at each eps: correct clean and minimal distance > eps + VERIFY_SLACK (the
    tolerance every verification in robustprune grants, so a PGD point on the eps sphere, a float32 rounding
    beyond it, counts as within eps here as it did in the battery)."""
    n = max(len(distances), 1)
    return [100.0 * float((clean_correct & (distances > eps + VERIFY_SLACK)).sum()) / n for eps in grid]


def _correct_on_every_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, passes: int):
    """Per example: predicted y on each of `passes` forward passes (one pass for a deterministic model)."""
    with torch.no_grad():
        out = torch.ones(len(y), dtype=torch.bool, device=y.device)
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            for _ in range(passes):
                out[start : start + batch_size] &= model(xb).argmax(dim=1) == yb
    return out


def _median(values: np.ndarray) -> float | None:
    median = float(np.median(values)) if values.size else math.inf
    return median if math.isfinite(median) else None


def _verified(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, norm: str, batch_size: int, passes: int
) -> tuple[np.ndarray, int]:
    """Per row: the measured distance of x_adv when it is a verified adversarial point (moved, finite, inside
    [0, 1], misclassified on at least one of `passes` predictions), else inf; and how many moved points failed."""
    moved = (x_adv != x).flatten(1).any(dim=1)
    distances = np.full(len(y), math.inf)
    if not bool(moved.any()):
        return distances, 0
    flat = x_adv.flatten(1)
    in_box = torch.isfinite(flat).all(dim=1) & (flat >= 0).all(dim=1) & (flat <= 1).all(dim=1)
    if passes > 0:
        broken = ~_correct_on_every_pass(model, x_adv, y, batch_size, passes)
    else:  # points the scoring engine already verified misclassified (re-drawing a randomized model would differ)
        broken = torch.ones_like(moved)
    ok = moved & in_box & broken
    measured = perturbation_norm(x_adv.double() - x.double(), norm)
    distances[ok.cpu().numpy()] = measured[ok].cpu().numpy()
    return distances, int((moved & ~ok).sum())


@dataclass(frozen=True)
class KnownPoints:
    """Adversarial points the scoring engine already verified (the battery's, at its eps), merged into the curve so
    that it never counts an example as robust at an eps where a verified point of the same run broke it. Their box
    and distance are checked again here; their misclassification is the engine's verdict (for a randomized model a
    fresh draw could disagree, and the headline counted them)."""

    title: str
    index: np.ndarray  # rows of the scored data
    x_adv: torch.Tensor


def min_norm_curve(
    model: nn.Module,
    data: Dataset,
    norm: str,
    grid: list[float],
    *,
    attacks: Sequence[str] = DEFAULT_MIN_NORM,
    seed: int = 0,
    batch_size: int = 256,
    steps: int = MIN_NORM_STEPS,
    n_passes: int = 1,
    known: KnownPoints | None = None,
    clean_correct: np.ndarray | None = None,
) -> EpsCurve:
    """Run each minimum-norm attack of `attacks` on the clean-correct examples of `data` and derive robust accuracy
    at every eps of `grid` (upper bounds) from each example's smallest verified distance (`known` points count
    too). A point is verified when it lies inside [0, 1] and is misclassified on at least one of `n_passes`
    re-predictions; its distance is measured on the point itself. Points failing verification count as not broken
    (`rejected`). `clean_correct`: the engine's clean verdict per example (default: predicted here, correct on
    every pass), so that the curve starts at the headline's clean accuracy."""
    if norm not in NORMS:
        raise UsageError(f"the eps curve supports norms {', '.join(NORMS)}, got {norm!r}")
    unknown = [a for a in attacks if a not in MIN_NORM_ATTACKS]
    if unknown or not attacks:
        raise UsageError(f"eps curve attacks must be some of {', '.join(MIN_NORM_ATTACKS)}, got {list(attacks)!r}")
    grid = check_eps_grid(grid)
    started = time.perf_counter()
    counted = CountingModel(model)  # eval mode is set on `model` itself: the wrapper's train()/eval() do nothing
    x, y = data.x, data.y
    n = len(y)
    best = np.full(n, math.inf)
    owner = np.full(n, -1)
    runs = []

    def merge(title: str, distances: np.ndarray, rejected: int, since: float) -> None:
        nonlocal best, owner
        closer = distances < best
        best = np.where(closer, distances, best)
        owner = np.where(closer, len(runs), owner)
        runs.append(
            MinNormRun(
                attack=title,
                n_found=int(np.isfinite(distances[correct]).sum()),
                rejected=rejected,
                median_distance=_median(distances[correct]),
                closest=0,
                seconds=time.perf_counter() - since,
            )
        )

    with eval_mode(model):
        if clean_correct is None:
            correct = _correct_on_every_pass(counted, x, y, batch_size, n_passes).cpu().numpy()
        else:
            correct = np.asarray(clean_correct, dtype=bool)
            if correct.shape != (n,):
                raise ValueError(f"clean_correct has shape {correct.shape}, expected ({n},)")
        best[~correct] = 0.0
        index = np.flatnonzero(correct)
        for name in attacks:
            attack, since = MIN_NORM_ATTACKS[name], time.perf_counter()
            distances, rejected = np.full(n, math.inf), 0
            for start in range(0, len(index), batch_size):
                rows = index[start : start + batch_size]
                rows_t = torch.as_tensor(rows, device=x.device)
                xb, yb = x[rows_t], y[rows_t]
                x_adv = attack.run(counted, xb, yb, norm, steps, seed + start)
                distances[rows], failed = _verified(counted, xb, yb, x_adv, norm, batch_size, n_passes)
                rejected += failed
            merge(attack.title, distances, rejected, since)
        if known is not None:  # even when empty: the label says the battery's points were merged
            since = time.perf_counter()
            rows = np.asarray(known.index, dtype=np.int64)
            rows_t = torch.as_tensor(rows, device=x.device)
            distances = np.full(n, math.inf)
            distances[rows], rejected = _verified(
                counted, x[rows_t], y[rows_t], known.x_adv.to(x.device, x.dtype), norm, batch_size, passes=0
            )
            distances[~correct] = math.inf  # the clean prediction already settles those
            merge(known.title, distances, rejected, since)
    for position, run in enumerate(runs):
        run.closest = int((owner[correct] == position).sum())
    correct_distances = best[correct]
    return EpsCurve(
        attack="+".join(r.attack for r in runs),
        norm=norm,
        steps=steps,
        bound="upper",
        grid=grid,
        robust_acc=curve_from_distances(best, correct, grid),
        clean_acc=100.0 * float(correct.mean()) if n else 0.0,
        n_examples=n,
        n_clean_correct=int(correct.sum()),
        n_found=int(np.isfinite(correct_distances).sum()),
        rejected=sum(r.rejected for r in runs),
        median_distance=_median(correct_distances),
        distances=[float(d) if math.isfinite(d) else None for d in best],
        runs=runs,
        n_passes=n_passes,
        seconds=time.perf_counter() - started,
        n_forward=counted.n_forward,
        n_backward=counted.n_backward,
    )
