"""The one training loop every defense shares (as in open_lth): the defense supplies the loss, callbacks add
pruning steps, checks and log entries. Seeded and deterministic on CPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import torch
from torch import nn

from robustprune.config import check_fields
from robustprune.data import Dataset
from robustprune.errors import UsageError
from robustprune.metrics.activity import TrainModeDeadRate, dead_relu_rate
from robustprune.models.modes import eval_mode
from robustprune.progress import progress_bar

logger = logging.getLogger("robustprune.train")

Schedule = Literal["constant", "cosine", "step", "cyclic"]


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    epochs: int = 10
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = "cosine"
    # Cycle SGD momentum inversely to the cyclic lr, as torch's CyclicLR(cycle_momentum=True) in the fast-AT
    # CIFAR code: `momentum` where the lr is 0 (start and end), `base_momentum` at the lr peak.
    cycle_momentum: bool = False
    base_momentum: float = 0.8
    # Held-out robustness probe logged every epoch (PGD on the first `probe_size` validation examples).
    probe_eps: float = 0.1
    probe_steps: int = 10
    probe_size: int = 128

    def __post_init__(self) -> None:
        check_fields(self, "[train]")  # types, finiteness and bounds (epochs, batch_size, lr, probe_*)
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"optimizer {self.optimizer!r} is not one of sgd, adam")
        if self.schedule not in ("constant", "cosine", "step", "cyclic"):
            raise UsageError(f"schedule {self.schedule!r} is not one of constant, cosine, step, cyclic")
        if self.cycle_momentum and (self.schedule != "cyclic" or self.optimizer != "sgd"):
            raise UsageError(
                f'cycle_momentum needs schedule = "cyclic" and optimizer = "sgd", got {self.schedule!r} and '
                f"{self.optimizer!r}"
            )
        if self.cycle_momentum and self.base_momentum > self.momentum:
            raise UsageError(f"base_momentum ({self.base_momentum}) must not exceed momentum ({self.momentum})")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # the momentum cycle stays out at its defaults, so the names (hashes) of existing runs do not change
        if not self.cycle_momentum:
            del data["cycle_momentum"]
            if self.base_momentum == 0.8:
                del data["base_momentum"]
        return data

    def momentum_at(self, progress: float) -> float:
        """SGD momentum at `progress` through training: `momentum` unless cycled; cycled, linear in the lr factor
        from `momentum` (lr 0) down to `base_momentum` (lr peak)."""
        if not self.cycle_momentum:
            return self.momentum
        return self.momentum - (self.momentum - self.base_momentum) * lr_factor(self.schedule, progress)


@dataclass
class StepContext:
    """What a loss or callback may read about the current step."""

    epoch: int
    step: int  # global step, from 0
    total_steps: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int = 0


class Loss(Protocol):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor: ...


class Callback:
    """Hooks into the loop; every method is optional."""

    def on_train_begin(self, ctx: StepContext) -> None: ...

    def on_batch_begin(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> None:
        """The batch the loop is about to train on (after the step's lr is set, before the loss)."""

    def on_step_end(self, ctx: StepContext) -> None: ...

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any]:
        return {}

    def should_stop(self) -> bool:
        return False


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def lr_factor(schedule: Schedule, progress: float) -> float:
    """Learning-rate multiplier at `progress` in [0,1] through training."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":  # x0.1 at 50% and 75%, the CIFAR convention
        return 1.0 if progress < 0.5 else 0.1 if progress < 0.75 else 0.01
    if schedule == "cyclic":  # triangular 0 -> peak -> 0 (Wong et al. fast AT)
        return 1 - abs(2 * progress - 1)
    return 1.0


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    with eval_mode(model, no_grad=True):
        correct = sum(
            int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
            for i in range(0, len(x), batch_size)
        )
    return correct / max(len(x), 1)


def pgd_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int) -> float:
    """Linf PGD accuracy on a held-out batch: the per-epoch robustness signal (catches catastrophic overfitting)."""
    from robustprune.defenses.perturb import pgd_linf

    with eval_mode(model):
        x_adv = pgd_linf(model, x, y, eps=eps, alpha=2.5 * eps / max(steps, 1), steps=steps, random_start=True)
    return accuracy(model, x_adv, y)


def fit(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    spec: TrainSpec,
    *,
    loss: Loss = cross_entropy,
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    progress: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train `model` in place; return the per-epoch log."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, spec)
    steps_per_epoch = math.ceil(len(train) / spec.batch_size)
    total = spec.epochs * steps_per_epoch
    ctx = StepContext(
        epoch=0, step=0, total_steps=total, model=model, optimizer=optimizer, steps_per_epoch=steps_per_epoch
    )
    probe_x, probe_y = val.x[: spec.probe_size], val.y[: spec.probe_size]
    for cb in callbacks:
        cb.on_train_begin(ctx)
    log: list[dict[str, Any]] = []
    bar = progress_bar(total, "train", "step", progress)
    for epoch in range(spec.epochs):
        ctx.epoch = epoch
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=generator)
        loss_sum = seen = 0.0
        dynamic = TrainModeDeadRate(model)
        with dynamic:
            for start in range(0, len(train), spec.batch_size):
                idx = order[start : start + spec.batch_size]
                x, y = train.x[idx], train.y[idx]
                for group in optimizer.param_groups:
                    group["lr"] = spec.lr * lr_factor(spec.schedule, (ctx.step + 0.5) / max(total, 1))
                    if spec.cycle_momentum:
                        group["momentum"] = spec.momentum_at((ctx.step + 0.5) / max(total, 1))
                for cb in callbacks:
                    cb.on_batch_begin(ctx, x, y)
                value = loss(model, x, y, ctx)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                for cb in callbacks:
                    cb.on_step_end(ctx)
                loss_sum += value.item() * len(idx)
                seen += len(idx)
                ctx.step += 1
                bar.update(1)
        train_seconds = time.perf_counter() - started  # the optimisation alone, without the probes below
        train_rate, train_layers = dynamic.rates()
        model.eval()
        entry = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": accuracy(model, train.x, train.y),
            "val_acc": accuracy(model, val.x, val.y),
            "pgd_acc": pgd_probe(model, probe_x, probe_y, spec.probe_eps, spec.probe_steps),
            "dead_relu_rate": _dead_rate(model, probe_x),  # eval mode, on the validation probe
            "dead_relu_rate_train": train_rate,  # dynamic: train-mode passes of this epoch's optimisation steps
            "dead_relu_rate_train_layers": train_layers,
            "lr": optimizer.param_groups[0]["lr"],
        }
        for cb in callbacks:
            entry.update(cb.on_epoch_end(ctx))
        entry["train_seconds"] = train_seconds
        entry["seconds"] = time.perf_counter() - started
        log.append(entry)
        logger.info(
            "epoch %d/%d: loss %.4f, val acc %.4f, PGD acc %.4f, %.1f s",
            epoch + 1,
            spec.epochs,
            entry["train_loss"],
            entry["val_acc"],
            entry["pgd_acc"],
            entry["seconds"],
        )
        if on_epoch:
            on_epoch(entry)
        if any(cb.should_stop() for cb in callbacks):
            entry["stopped_early"] = True
            break
    bar.close()
    model.eval()
    return log


def _dead_rate(model: nn.Module, x: torch.Tensor) -> float | None:
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        return None
    return dead_relu_rate(model, x)
