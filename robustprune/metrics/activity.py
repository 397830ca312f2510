"""Neuron activity: the dead-ReLU rate (the share of ReLU outputs that are exactly zero)."""

from __future__ import annotations

import math
from typing import Any, Literal, Self

from torch import Tensor, nn

from robustprune.errors import UsageError
from robustprune.sparsity.masks import measuring, model_device_dtype


def dead_relu_rate(
    model: nn.Module, x: Tensor, batch_size: int = 256, mode: Literal["dynamic", "always"] = "dynamic"
) -> float:
    """Dead-neuron rate of the `nn.ReLU` modules of `model` on inputs `x` (N, ...).

    mode="dynamic" is algorithms.md §4.4(b)'s DNR = (1/(|D|·|U|)) Σ_x Σ_u 1[ReLU(z_u(x)) = 0]: the share of
    (example, unit) pairs whose ReLU output is exactly 0. mode="always" is the share of units that are 0 for
    *every* example of `x`. A unit is one element of a ReLU output (conv channels count per spatial position);
    a ReLU module called k times per forward contributes k sets of units. Measured in eval mode under no_grad
    (no BatchNorm statistics change); functional `F.relu` calls are not seen.
    """
    if mode not in ("dynamic", "always"):
        raise UsageError(f"mode must be 'dynamic' or 'always', got {mode!r}")
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] == 0:
        raise UsageError("dead_relu_rate needs a non-empty tensor of examples (N, ...)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive int, got {batch_size!r}")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise UsageError("the model has no nn.ReLU module: the dead-neuron rate is undefined")
    zeros = total = 0
    always: list[Tensor] = []  # per (module call) units: dead on every example so far
    call = [0]

    def record(module: nn.Module, args: Any, output: Tensor) -> None:
        nonlocal zeros, total
        is_zero = output == 0
        zeros += int(is_zero.sum())
        total += is_zero.numel()
        if mode == "always":
            dead = is_zero.all(dim=0)
            if call[0] < len(always):
                always[call[0]] &= dead
            else:
                always.append(dead)
            call[0] += 1

    handles = [m.register_forward_hook(record) for m in relus]
    device, dtype = model_device_dtype(model)
    try:
        with measuring(model):
            for start in range(0, x.shape[0], batch_size):
                call[0] = 0
                model(x[start : start + batch_size].to(device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    if mode == "always":
        units = sum(a.numel() for a in always)
        return sum(int(a.sum()) for a in always) / units if units else math.nan
    return zeros / total if total else math.nan


class TrainModeDeadRate:
    """The *dynamic* dead-neuron rate (AP, algorithms.md §4.4(b)): the share of ReLU outputs that are exactly 0 in
    the forward passes training itself makes, counted per `nn.ReLU` module and overall.

    Only forward passes in train mode count (`module.training`), so what is measured is what the optimiser sees:
    training batches, dropout active, BatchNorm on batch statistics; an attack that crafts in eval mode (DIO-AT) and
    the per-epoch eval-mode probes are left out, while a defense that crafts in train mode (PGD-AT) contributes its
    crafting passes too. Use as a context manager around the optimisation steps; `rates()` reads the counts.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.relus = [(name or "relu", m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
        self.zeros = dict.fromkeys((name for name, _ in self.relus), 0)
        self.total = dict.fromkeys(self.zeros, 0)
        self._handles: list[Any] = []

    def __enter__(self) -> Self:
        def hook(name: str) -> Any:
            def record(module: nn.Module, args: Any, output: Tensor) -> None:
                if module.training:
                    self.zeros[name] += int((output == 0).sum())
                    self.total[name] += output.numel()

            return record

        self._handles = [m.register_forward_hook(hook(name)) for name, m in self.relus]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def rates(self) -> tuple[float | None, dict[str, float]]:
        """(overall rate, {ReLU module name: rate}); None overall when no train-mode ReLU output was seen."""
        layers = {name: self.zeros[name] / self.total[name] for name in self.zeros if self.total[name]}
        seen = sum(self.total.values())
        return (sum(self.zeros.values()) / seen if seen else None), layers
