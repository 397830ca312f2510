"""`fgsm_rs`: Wong, Rice & Kolter's fast adversarial training, FGSM with random start (arXiv 2001.03994;
algorithms.md §3.3).

Per batch: δ0 ~ U(−ε, ε) (clipped into [0,1]), one signed gradient step of size α = `alpha_factor`·ε (1.25ε in the
paper), projection onto the ε-ball and the box, then one optimizer step on CE(f(x+δ), y). The model crafts as it
trains (train mode), as in the reference code; the recipe uses the cyclic learning rate of the paper.

Catastrophic-overfitting guard (the reference's `--early-stop`, locuslab/fast_adversarial CIFAR10/train_fgsm.py):
after every epoch, PGD (`guard_steps` steps of ε/4, uniform random start, one restart) attacks the *first training
batch the loop drew that epoch* (at most `guard_size` examples of it; the default covers the whole batch) with the
model in *train mode*, as the reference calls `attack_pgd` without `model.eval()`: BatchNorm normalises with the
batch's own statistics during the guard's forwards. As in the reference's `attack_pgd`, an example stops moving once
it is misclassified. If the guard's accuracy falls by more than `guard_drop` (0.2) below the previous epoch's,
training stops and the previous epoch's weights are restored; the log records it.

One deliberate difference: in the reference, the guard's train-mode forwards also update BatchNorm's running
statistics, and the weights it keeps carry those updates. Here the guard snapshots every buffer (BatchNorm running
mean / variance / batch count) before its forwards and puts them back after, restores each module's train/eval
flag, draws its random start from its own generator (seeded with the run's seed) and runs in a forked RNG state: the
guard measures the model and changes nothing in it or in the run's random stream.

Momentum cycling (the CIFAR code's CyclicLR cycles momentum 0.9 <-> 0.8 inversely to the lr) is the [train] option
`cycle_momentum` (train_loop.TrainSpec), off in the digits recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from robustprune.data import Dataset
from robustprune.defenses.base import register_defense
from robustprune.defenses.common import LossDefense
from robustprune.defenses.perturb import fgsm_rs, project_linf
from robustprune.defenses.train_loop import Callback, Loss, StepContext
from robustprune.sparsity.masks import load_masked_state, masked_state


class CatastrophicOverfittingGuard(Callback):
    """Stop and restore the previous epoch's weights when `probe(model, x, y)` (a robust accuracy on the epoch's
    first training batch x, y, as the loop drew it) drops by more than `max_drop` from one epoch to the next. The
    first epoch only sets the reference."""

    def __init__(self, probe: Callable[[nn.Module, torch.Tensor, torch.Tensor], float], max_drop: float = 0.2) -> None:
        self.probe = probe
        self.max_drop = max_drop
        self.previous: float | None = None
        self.snapshot: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        self.snapshot_epoch = 0
        self.triggered = False
        self.first_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._batch_epoch: int | None = None

    def on_train_begin(self, ctx: StepContext) -> None:
        self.previous, self.triggered = None, False
        self.first_batch, self._batch_epoch = None, None
        self.snapshot, self.snapshot_epoch = masked_state(ctx.model), 0

    def on_batch_begin(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> None:
        if self._batch_epoch != ctx.epoch:  # the reference's `if i == 0: first_batch = (X, y)`
            self._batch_epoch, self.first_batch = ctx.epoch, (x.detach().clone(), y.detach().clone())

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any]:
        if self.first_batch is None or self._batch_epoch != ctx.epoch:
            raise RuntimeError("the catastrophic-overfitting guard saw no training batch this epoch")
        acc = float(self.probe(ctx.model, *self.first_batch))
        entry: dict[str, Any] = {"guard_pgd_acc": acc}
        if self.previous is not None and acc < self.previous - self.max_drop:
            assert self.snapshot is not None
            # the weights with the masks they had then (a gradual schedule may have added masks since)
            load_masked_state(ctx.model, *self.snapshot)
            self.triggered = True
            entry.update(
                {
                    "catastrophic_overfitting": True,
                    "guard_previous_acc": self.previous,
                    "restored_epoch": self.snapshot_epoch,
                }
            )
            return entry
        self.previous = acc
        self.snapshot, self.snapshot_epoch = masked_state(ctx.model), ctx.epoch + 1
        return entry

    def should_stop(self) -> bool:
        return self.triggered


@register_defense("fgsm_rs")
class FGSMRS(LossDefense):
    # Digits defaults; CIFAR-10 code: eps 8/255, alpha 10/255 (1.25 eps), PGD-5 step 2/255 for the guard.
    # guard_size caps the examples of the epoch's first batch the guard attacks (>= batch_size: the whole batch, as
    # the reference).
    defaults = {"eps": 0.1, "alpha_factor": 1.25, "guard": True, "guard_drop": 0.2, "guard_steps": 5, "guard_size": 128}

    def validate(self) -> None:
        self._check_eps()
        self._check_positive("alpha_factor", "guard_drop", "guard_steps", "guard_size")

    def make_loss(self, train: Dataset) -> Loss:
        eps = float(self.settings["eps"])
        alpha = float(self.settings["alpha_factor"]) * eps

        def fgsm_rs_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
            x_adv = fgsm_rs(model, x, y, eps=eps, alpha=alpha)
            return nn.functional.cross_entropy(model(x_adv), y)

        return fgsm_rs_loss

    def make_callbacks(self, train: Dataset, val: Dataset, seed: int) -> Sequence[Callback]:
        if not self.settings["guard"]:
            return ()
        eps, steps = float(self.settings["eps"]), int(self.settings["guard_steps"])
        size = int(self.settings["guard_size"])
        generator = torch.Generator().manual_seed(seed)  # the guard's random starts, apart from the run's stream

        def probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
            return guard_pgd_accuracy(
                model, x[:size], y[:size], eps=eps, alpha=eps / 4, steps=steps, generator=generator
            )

        return (CatastrophicOverfittingGuard(probe, float(self.settings["guard_drop"])),)


def guard_pgd_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> float:
    """The reference guard's robust accuracy on (x, y): `attack_pgd` with one restart, the model in train mode, then
    the accuracy of that train-mode model on x + δ. Examples stop moving once misclassified (as the reference). The
    model comes back unchanged: buffers (BatchNorm running statistics) and train/eval flags are restored, and the
    global RNG state too (forked), so the guard does not shift the training run's random stream."""
    flags = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    x, y = x.detach(), y.detach()
    shape = (-1, *([1] * (x.dim() - 1)))
    start = torch.rand(x.shape, generator=generator).to(x) * 2 - 1
    delta = project_linf(x + eps * start, x, eps) - x
    try:
        with torch.random.fork_rng(devices=[]):
            model.train()
            for _ in range(steps):
                delta.requires_grad_(True)
                logits = model(x + delta)
                moving = logits.argmax(dim=1) == y
                if not bool(moving.any()):
                    break
                (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y), delta)
                stepped = project_linf(x + delta.detach() + alpha * grad.sign(), x, eps) - x
                delta = torch.where(moving.view(shape), stepped, delta.detach())
            with torch.no_grad():
                correct = model(x + delta.detach()).argmax(dim=1) == y
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, flag in flags:
            module.training = flag
    return float(correct.float().mean()) if len(y) else 0.0
