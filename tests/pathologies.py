"""Pathologies as small composable wrappers: each takes a model and returns one that breaks evaluations in one
way, and says how the truth about it is reached (the model a correct adaptive attack crafts on, judged on the
wrapped model). Shared by tests/scoring/test_pathology_panel.py and bench/pathology_panel.py.

Every wrapper computes (up to float rounding) the function it names, so a reference attack on `reference(inner)`
judged on the wrapped model is a valid adaptive attack: BPDA through rounding, thresholds and custom Functions
(their straight-through versions), the inner model's logits through detaches, no-grad regions, decoy terms,
argmax one-hots, softmax and saturation. The reference attacks use torchattacks, not robustprune.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

LEVELS = 4  # grey levels of the rounding pathologies: coarse enough to mask, fine enough to keep accuracy


class Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner


def _round(x: torch.Tensor, straight_through: bool) -> torch.Tensor:
    rounded = torch.round(x * LEVELS) / LEVELS
    return x + (rounded - x).detach() if straight_through else rounded


class Rounded(Wrapper):
    """torch.round called inside forward (not a module): input quantization."""

    def __init__(self, inner: nn.Module, straight_through: bool = False) -> None:
        super().__init__(inner)
        self.straight_through = straight_through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(_round(x, self.straight_through))


class RoundedInPlace(Wrapper):
    """In-place quantization of (its copy of) the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x.mul_(LEVELS).round_().div_(LEVELS)
        return self.inner(x)


class _ZeroRound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * LEVELS) / LEVELS

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad)


class _ConstantRound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * LEVELS) / LEVELS

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, 1e-3)  # a decoy: the same gradient whatever the loss


class ZeroBackward(Wrapper):
    """A custom autograd Function (rounding) whose backward returns zeros."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(_ZeroRound.apply(x))


class ConstantBackward(Wrapper):
    """A custom autograd Function (rounding) whose backward ignores its incoming gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(_ConstantRound.apply(x))


class Thresholded(Wrapper):
    """A comparison cast to float: the input binarized at 0.5."""

    def __init__(self, inner: nn.Module, straight_through: bool = False) -> None:
        super().__init__(inner)
        self.straight_through = straight_through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        binary = (x > 0.5).float()
        return self.inner(x + (binary - x).detach() if self.straight_through else binary)


class ArgmaxOneHot(Wrapper):
    """Outputs a scaled one-hot of the inner model's argmax: the same predictions, no gradient at all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        return nn.functional.one_hot(logits.argmax(dim=1), logits.shape[1]).float() * 10


class ZeroTerm(Wrapper):
    """The graph cut at the input, kept connected through an exactly zero term."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.detach()) + 0 * x.sum()


class DecoyGradient(Wrapper):
    """The graph cut at the input, kept connected through a small fixed linear term carrying no information."""

    def __init__(self, inner: nn.Module, features: int, classes: int) -> None:
        super().__init__(inner)
        generator = torch.Generator().manual_seed(7)
        self.register_buffer("decoy", torch.randn(features, classes, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.detach()) + 1e-3 * (x.flatten(1) @ self.decoy)


class PartialDetach(Wrapper):
    """Half of the input's pixels detached: the gradient reaches only the other half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros_like(x)
        keep.flatten(1)[:, ::2] = 1
        return self.inner(x * keep + x.detach() * (1 - keep))


class NoGradRegion(Wrapper):
    """Part of the path under torch.no_grad()."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            prepared = x * 1.0
        return self.inner(prepared)


class EarlyExit(Wrapper):
    """An input-dependent branch: inputs on the data's 1/16 grid go straight through, anything else is rounded."""

    def __init__(self, inner: nn.Module, straight_through: bool = False) -> None:
        super().__init__(inner)
        self.straight_through = straight_through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(((x * 16) - (x * 16).round()).abs().max() < 1e-4):
            return self.inner(x)  # looks clean: the exit
        return self.inner(_round(x, self.straight_through))


class Softmaxed(Wrapper):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inner(x), dim=1)


class LogSoftmaxed(Wrapper):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.inner(x), dim=1)


class Saturated(Wrapper):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 1e4


class NoisyForward(Wrapper):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + 0.1 * torch.randn_like(x))


class TrainModeDropout(Wrapper):
    """Dropout on the input, handed over in train mode (scored in eval mode, with S3's warning)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__(inner)
        self.dropout = nn.Dropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.dropout(x))


class BatchStatistics(Wrapper):
    """Normalizes each example by statistics of the whole batch: its logits depend on its batch-mates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x - x.mean(dim=0, keepdim=True)) * 0.5 + 0.5)


class EditsItsInput(Wrapper):
    """Halves its input in place, then doubles it back: the inner model's function exactly, but before the
    boundary it rewrote the test set through the view it was handed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(0.5)
        return self.inner(x * 2)


class NumpyFlattened(Wrapper):
    """Through numpy, flattened: a cut no straight-through version can rejoin."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.tensor(x.detach().cpu().numpy().reshape(len(x), -1), device=x.device)
        return self.inner(flat.view_as(x))


class TupleOutput(Wrapper):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.inner(x)
        return out, out


class BreaksAfterAWhile(Wrapper):
    """Raises on every call from its 80th: after the model checks, inside the battery."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__(inner)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= 80:
            raise RuntimeError("boom")
        return self.inner(x)


class ExitsInForward(Wrapper):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sys.exit(0)


class RescalesItsWeights(Wrapper):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for p in self.inner.parameters():
                p.mul_(1.01)
        return self.inner(x)


def negative_mask(inner: nn.Module) -> nn.Module:
    """A torch.nn.utils.prune mask of -1 on the first Linear layer: it negates the weights it should keep."""
    layer = next(m for m in inner.modules() if isinstance(m, nn.Linear))
    prune.custom_from_mask(layer, "weight", -torch.ones_like(layer.weight))
    return inner


@dataclass(frozen=True)
class Pathology:
    """One way of breaking evaluations, as a wrapper.

    ends: "verdict" (a result), "usage" (unusable from the start: UsageError, exit 2) or "run" (fails during the
        run: UserCodeError, exit 1).
    inflates: whether it can make the robust accuracy look higher than it is (then it must not be `trusted`).
    reference: the model a correct adaptive attack crafts on (judged on the wrapped model), where a generic
        escalation can reach the truth; None where nothing generic can (or nothing needs to).
    """

    name: str
    wrap: Callable[[nn.Module, tuple[int, ...], int], nn.Module]
    ends: str = "verdict"
    inflates: bool = True
    reference: Callable[[nn.Module], nn.Module] | None = None
    randomized: bool = False
    same_numbers: bool = False  # the wrapped model computes exactly the inner model: the numbers must be equal


def _inner(model: nn.Module) -> nn.Module:
    return model


PATHOLOGIES = (
    Pathology("functional round", lambda m, s, k: Rounded(m), reference=lambda m: Rounded(m, straight_through=True)),
    Pathology(
        "in-place round", lambda m, s, k: RoundedInPlace(m), reference=lambda m: Rounded(m, straight_through=True)
    ),
    Pathology(
        "Function, zero backward",
        lambda m, s, k: ZeroBackward(m),
        reference=lambda m: Rounded(m, straight_through=True),
    ),
    Pathology(
        "Function, constant backward",
        lambda m, s, k: ConstantBackward(m),
        reference=lambda m: Rounded(m, straight_through=True),
    ),
    Pathology(
        "comparison cast to float",
        lambda m, s, k: Thresholded(m),
        reference=lambda m: Thresholded(m, straight_through=True),
    ),
    Pathology("argmax one-hot output", lambda m, s, k: ArgmaxOneHot(m), reference=_inner),
    Pathology("detach + zero term", lambda m, s, k: ZeroTerm(m), reference=_inner),
    Pathology("decoy gradient term", lambda m, s, k: DecoyGradient(m, int(np.prod(s)), k), reference=_inner),
    Pathology("partial detach", lambda m, s, k: PartialDetach(m), reference=_inner),
    Pathology("no-grad region", lambda m, s, k: NoGradRegion(m), reference=_inner),
    Pathology(
        "input-dependent early exit",
        lambda m, s, k: EarlyExit(m),
        reference=lambda m: EarlyExit(m, straight_through=True),
    ),
    Pathology("softmax output", lambda m, s, k: Softmaxed(m), reference=_inner),
    Pathology("log-softmax output", lambda m, s, k: LogSoftmaxed(m), reference=_inner),
    Pathology("saturated logits", lambda m, s, k: Saturated(m), reference=_inner),
    Pathology(
        "noise in forward", lambda m, s, k: NoisyForward(m), reference=lambda m: NoisyForward(m), randomized=True
    ),
    Pathology("dropout handed in train mode", lambda m, s, k: TrainModeDropout(m).train()),
    Pathology("batch-dependent forward", lambda m, s, k: BatchStatistics(m), randomized=True),
    Pathology("edits its input in place", lambda m, s, k: EditsItsInput(m), inflates=False, same_numbers=True),
    Pathology("numpy round trip", lambda m, s, k: NumpyFlattened(m)),
    Pathology("tuple output", lambda m, s, k: TupleOutput(m), ends="usage", inflates=False),
    Pathology("sys.exit in forward", lambda m, s, k: ExitsInForward(m), ends="usage", inflates=False),
    Pathology("rescales its weights", lambda m, s, k: RescalesItsWeights(m), ends="usage", inflates=False),
    Pathology("prune mask of -1", lambda m, s, k: negative_mask(m), ends="usage", inflates=False),
    Pathology("raises from its 80th call", lambda m, s, k: BreaksAfterAWhile(m), ends="run", inflates=False),
)
