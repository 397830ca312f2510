"""PGD on any per-example objective, with the bookkeeping checks need: a running best loss per step (the trace
convergence is judged on) and whether some iterate was already adversarial (silent success is judged on it).

Used by robustprune's own attacks (adaptive EOT / all-heads PGD, rescaled-logit PGD, BPDA, transfer) and by the
health checks' probes. When the objective says which examples are misclassified on the current forward pass (a
deterministic model), an example keeps its first adversarial iterate and stops moving; otherwise (a randomized
model, where one pass proves nothing) it keeps its highest-loss iterate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

# x -> (per-example loss to maximise, per-example "misclassified on this pass" or None when that proves nothing)
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class PGDTrace:
    best_loss: np.ndarray  # (n, steps + 1): running best objective after each step
    found_adversarial: np.ndarray  # (n,) bool: some iterate was misclassified (deterministic objectives only)

    def improvement_at_end(self, window: int = 10) -> np.ndarray:
        """Per example, how much the running best loss still rose over the last `window` steps, relative to its
        whole rise (0: converged, 1: all progress came at the end); NaN where the loss never moved."""
        trace = self.best_loss
        if trace.shape[1] < 2:
            return np.full(len(trace), np.nan)
        window = min(window, trace.shape[1] - 1)
        total = trace[:, -1] - trace[:, 0]
        late = trace[:, -1] - trace[:, -1 - window]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, late / total, np.nan)


def project(delta: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Onto the eps-ball, then into the [0,1] box (clamping only shrinks |delta|, so the ball still holds)."""
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        delta = delta * torch.clamp(eps / norms, max=1.0)
    return (x + delta).clamp(0.0, 1.0) - x


def random_delta(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A uniform point of the Linf ball, or a random direction at a radius uniform in [0, eps] for L2."""
    shape = (-1, *([1] * (x.dim() - 1)))
    if norm == "Linf":
        return (2 * torch.rand(x.shape, generator=generator).to(x) - 1) * eps
    direction = torch.randn(x.shape, generator=generator).to(x)
    radius = torch.rand(len(x), generator=generator).to(x).view(shape)
    return direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape) * radius * eps


def cross_entropy_objective(model: nn.Module, y: torch.Tensor, *, deterministic: bool = True) -> Objective:
    """CE of the model's logits; misclassification reported only for a deterministic model."""

    def objective(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = model(x)
        wrong = (logits.argmax(dim=1) != y).detach() if deterministic else None
        return nn.functional.cross_entropy(logits, y, reduction="none"), wrong

    return objective


def pgd(
    objective: Objective,
    x: torch.Tensor,
    *,
    norm: str,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, PGDTrace]:
    """Maximise the objective by PGD in the `norm` ball of radius eps around x (see the module docstring)."""
    x = x.detach()
    shape = (-1, *([1] * (x.dim() - 1)))
    delta = project(random_delta(x, norm, eps, generator), x, norm, eps) if random_start else torch.zeros_like(x)
    best, best_loss = x + delta, torch.full((len(x),), -float("inf"), device=x.device)
    found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    trace = np.zeros((len(x), steps + 1), dtype=np.float32)
    for step in range(steps + 1):
        x_adv = (x + delta).requires_grad_(step < steps)
        with torch.set_grad_enabled(step < steps):
            loss, wrong = objective(x_adv)
        value = loss.detach()
        better = (value > best_loss) & ~found
        if wrong is not None:
            better = better | (wrong & ~found)  # the first adversarial iterate wins over any loss
            found = found | wrong
        best = torch.where(better.view(shape), x_adv.detach(), best)
        best_loss = torch.where(better | found, torch.maximum(best_loss, value), best_loss)
        trace[:, step] = best_loss.cpu().numpy()
        if step == steps or bool(found.all()):
            trace[:, step + 1 :] = trace[:, step : step + 1]
            break
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        if norm == "Linf":
            step_delta = alpha * grad.sign()
        else:
            step_delta = alpha * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
        step_delta = torch.where(found.view(shape), torch.zeros_like(step_delta), step_delta)  # done: stop moving
        delta = project(delta.detach() + step_delta, x, norm, eps)
    return best.detach(), PGDTrace(best_loss=trace, found_adversarial=found.cpu().numpy())


def restarted_pgd(
    attack: Any,
    make_objective: Callable[[torch.Tensor], Objective],
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    *,
    record: bool = True,
) -> torch.Tensor:
    """`restarts` random-start PGD runs with an attack's settings (steps, rel_step, restarts) on the examples no
    earlier run found adversarial. With `record`, the attack keeps one trace for the batch: the first run's loss
    trace, and whether any run found an adversarial iterate (leave it off when the objective is another model's:
    its "adversarial" says nothing about the scored one)."""
    best = x.clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    generator = torch.Generator().manual_seed(seed)
    first: PGDTrace | None = None
    for _ in range(int(attack.settings["restarts"])):
        todo = (~done).nonzero().flatten()
        if len(todo) == 0:
            break
        x_adv, trace = pgd(
            make_objective(y[todo]),
            x[todo],
            norm=attack.threat.norm,
            eps=attack.threat.eps,
            alpha=attack.step_size(),
            steps=int(attack.settings["steps"]),
            random_start=True,
            generator=generator,
        )
        first = first or trace
        best[todo] = x_adv
        done[todo] = torch.from_numpy(trace.found_adversarial).to(done.device)
    if first is not None and record:
        attack.record_trace(PGDTrace(best_loss=first.best_loss, found_adversarial=done.cpu().numpy()))
    return best


def combine_traces(traces: list[PGDTrace]) -> PGDTrace | None:
    """The traces of consecutive batches as one (rows in batch order); None when there are none or their step
    counts differ."""
    if not traces:
        return None
    steps = {t.best_loss.shape[1] for t in traces}
    if len(steps) != 1:
        return None
    return PGDTrace(
        best_loss=np.concatenate([t.best_loss for t in traces]),
        found_adversarial=np.concatenate([t.found_adversarial for t in traces]),
    )
