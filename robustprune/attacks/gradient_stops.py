"""Where a model's forward pass stops the gradient, operation by operation, and a straight-through version of each.

Gradient masking rarely lives in a module of its own: `torch.round(x * 255) / 255` inside `forward`, a comparison
cast to float, an argmax one-hot, `x.detach()` or a `torch.no_grad()` block on part of the path, an in-place
`round_()`, a custom autograd Function whose backward returns zeros or a constant, a round trip through numpy. The
interposer here is a `torch.overrides.TorchFunctionMode` entered only while the model's own forward pass runs
(models/guard.wrap_forward), plus `torch.autograd.Function.apply` and `torch.from_numpy` wrapped for the same span.

Why a function mode rather than tracing (torch.fx, torch.export): it sees every torch call as it happens, in any
Python the model runs: data-dependent branches and early exits, in-place operations, Tensor methods, grad-mode
switches and the insides of custom Functions, none of which a symbolic trace keeps; and it can replace a result
while the autograd graph is being built, which is what a straight-through estimator needs (a dispatch mode runs
below autograd and could not). What it cannot see: TorchScript and compiled code, and numpy code between a tensor
leaving torch and one coming back (bridged by shape, below).

Two modes:
- `locate_gradient_stops(model, x)` runs one forward pass and lists each operation that stops the gradient of a
  tensor that carries one: zero-derivative rounding (ROUNDING), `detach` / `.data`, a no-grad or inference-mode
  region, a discrete result (comparison, argmax, integer cast) cast back to float, a tensor that left torch for numpy
  and came back, and a custom Function whose backward is zero or does not depend on its incoming gradient.
- `straight_through_ops(model)` makes each of them pass the gradient through (BPDA, Athalye et al. 2018): rounding
  becomes `x + (round(x) - x).detach()`, detach and `.data` return their input, no-grad regions keep the graph, a
  comparison or argmax cast back to float carries the gradient of its source (the identity, or the softmax for an
  argmax one-hot), numpy round trips rejoin the tensor that left, masking custom Functions become the identity on
  the backward pass. The forward values never change: examples found this way are judged on the model as given.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from robustprune.models.guard import wrap_forward

# Zero derivative almost everywhere, the same shape in and out: the straight-through version is the identity.
ROUNDING = frozenset({"round", "floor", "ceil", "trunc", "fix", "sign", "sgn", "heaviside", "floor_divide"})
ROUNDING_INPLACE = frozenset(f"{name}_" for name in ROUNDING)
DETACHING = frozenset({"detach", "detach_", "data"})  # "data" is the `.data` attribute read
ARGMAX = frozenset({"argmax", "argmin", "max", "min", "topk", "sort", "argsort", "mode"})
CREATION = frozenset({"tensor", "as_tensor", "from_numpy"})  # a tensor made from non-tensor data
# Frames in these directories are the machinery between the model's line and the operation
_MACHINERY = (str(Path(torch.__file__).parent), str(Path(__file__).resolve().parents[1]), contextlib.__file__)


@dataclass(frozen=True)
class GradientStop:
    """One operation of the forward pass that stops the gradient of a tensor carrying one."""

    op: str  # "round", "detach", "gt -> float", "no_grad region", "Function MyRound", "numpy round trip"
    kind: str  # zero derivative | detached | no-grad region | discrete cast to float | left torch | masking backward
    where: str  # file:line of the model's code that called it

    def text(self) -> str:
        return f"{self.op} at {self.where} ({self.kind})"


def _name(func: Any) -> str:
    name = getattr(func, "__name__", "") or ""
    if name == "__get__":  # an attribute read such as `.data`
        return str(getattr(getattr(func, "__self__", None), "__name__", name))
    return name


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _carrying(args: tuple, kwargs: dict) -> list[Tensor]:
    """The floating tensors among the arguments that carry a gradient."""
    return [t for t in _tensors((args, kwargs)) if t.is_floating_point() and t.requires_grad]


def _call_site() -> str:
    """file:line of the innermost frame outside torch and robustprune: the model's own line."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith(_MACHINERY):
            return f"{Path(path).name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _masking_backward(cls: type, apply: Any, args: tuple, kwargs: dict) -> bool:
    """Whether custom Function `cls` has a zero backward, or one that ignores its incoming gradient, at these
    inputs: its vector-Jacobian product for two different incoming gradients is zero, or the same."""
    leaves = [a.detach().clone().requires_grad_(True) if isinstance(a, Tensor) and a.requires_grad else a for a in args]
    inputs = [a for a in leaves if isinstance(a, Tensor) and a.requires_grad]
    if not inputs:
        return False
    with torch.enable_grad():
        out = apply(cls, *leaves, **kwargs)
    outs = [o for o in _tensors(out) if o.is_floating_point() and o.requires_grad]
    if not outs:
        return False
    generator = torch.Generator().manual_seed(0)
    products = []
    for scale in (1.0, 3.0):
        grads = [scale * torch.randn(o.shape, generator=generator).to(o) + scale for o in outs]
        found = torch.autograd.grad(outs, inputs, grads, retain_graph=True, allow_unused=True)
        products.append(
            torch.cat([(g if g is not None else torch.zeros_like(i)).flatten() for g, i in zip(found, inputs)])
        )
    first, second = products
    return bool((first == 0).all()) or bool(torch.equal(first, second))


class _Interposer(TorchFunctionMode):
    """Shared bookkeeping of both modes for one forward pass: discrete results and tensors that left torch, each
    remembered with the differentiable tensor it came from (references kept, so ids stay unique in the pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.discrete: dict[int, tuple[Tensor, Tensor, bool, str]] = {}  # id -> (result, source, via argmax, op)
        self.exits: list[Tensor] = []  # differentiable tensors that left torch (numpy) in this pass
        self.function_depth = 0

    def track_discrete(self, out: Any, source: Tensor, via_argmax: bool, op: str) -> None:
        for t in _tensors(out):
            if not t.is_floating_point():
                self.discrete[id(t)] = (t, source, via_argmax, op)

    def discrete_source(self, args: tuple, kwargs: dict) -> tuple[Tensor, bool, str] | None:
        for t in _tensors((args, kwargs)):
            entry = self.discrete.get(id(t))
            if entry is not None and entry[0] is t:
                return entry[1], entry[2], entry[3]
        return None

    def rejoining(self, out: Tensor) -> Tensor | None:
        """The tensor that left torch with this one's shape, for a tensor made from numpy data (latest first)."""
        return next((t for t in reversed(self.exits) if t.shape == out.shape), None)


class _Locator(_Interposer):
    def __init__(self) -> None:
        super().__init__()
        self.stops: list[GradientStop] = []
        self._seen: set[tuple[str, str]] = set()
        self.no_grad_open = False

    def add(self, op: str, kind: str) -> None:
        where = _call_site()
        if (op, where) not in self._seen:
            self._seen.add((op, where))
            self.stops.append(GradientStop(op, kind, where))

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = _name(func)
        out = func(*args, **kwargs)
        if self.function_depth or name == "_set_grad_enabled":
            return out
        carrying = _carrying(args, kwargs)
        if not carrying:
            source = self.discrete_source(args, kwargs)
            if source is not None:
                floats = [t for t in _tensors(out) if t.is_floating_point() and not t.requires_grad]
                if floats:
                    self.add(f"{source[2]} -> {name}", "discrete cast to float")
                else:
                    self.track_discrete(out, source[0], source[1], source[2])
            elif (
                name in CREATION
                and isinstance(out, Tensor)
                and out.is_floating_point()
                and self.rejoining(out) is not None
            ):
                self.add("numpy round trip", "left torch")
            return out
        if name == "numpy":
            self.exits.append(carrying[0])
            return out
        if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
            self.add("no_grad region", "no-grad region")
            return out
        results = _tensors(out)
        if name in DETACHING:
            self.add(name, "detached")
        elif name in ROUNDING or name in ROUNDING_INPLACE:
            self.add(name, "zero derivative")
        elif results and all(not t.is_floating_point() for t in results):
            self.track_discrete(out, carrying[0], name in ARGMAX, name)
        elif any(t.is_floating_point() and not t.requires_grad for t in results):
            self.add(name, "detached")
        return out


class _StraightThrough(_Interposer):
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = _name(func)
        if name == "_set_grad_enabled" and args and args[0] is False and not self.function_depth:
            return None  # a no-grad region keeps the graph: its exact derivative flows
        if self.function_depth:
            return func(*args, **kwargs)
        carrying = _carrying(args, kwargs)
        if not carrying:
            return self._rejoin(name, func, args, kwargs)
        source = carrying[0]
        if name in DETACHING:
            return source
        if name == "numpy":
            self.exits.append(source)
            return source.detach().numpy()
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False):
                return func(*args, **kwargs)
        if name in ROUNDING_INPLACE and isinstance(args[0], Tensor) and args[0].requires_grad:
            before = args[0].clone()
            rounded = getattr(torch.Tensor, name[:-1])(before, *args[1:], **kwargs)
            return args[0].copy_(before + (rounded - before).detach())
        out = func(*args, **kwargs)
        if name in ROUNDING and isinstance(out, Tensor) and out.shape == source.shape:
            return source + (out - source).detach()
        results = _tensors(out)
        if results and all(not t.is_floating_point() for t in results):
            self.track_discrete(out, source, name in ARGMAX, name)
        return out

    def _rejoin(self, name: str, func: Any, args: tuple, kwargs: dict) -> Any:
        """A discrete result cast back to float, or numpy data made a tensor again: joined to its source."""
        out = func(*args, **kwargs)
        entry = self.discrete_source(args, kwargs)
        if isinstance(out, Tensor) and out.is_floating_point() and not out.requires_grad:
            if entry is not None and out.shape == entry[0].shape:
                source, via_argmax, _ = entry
                surrogate = torch.softmax(source, dim=-1) if via_argmax else source
                return surrogate + (out - surrogate.to(out.dtype)).detach().to(surrogate.dtype)
            joined = self.rejoining(out) if name in CREATION else None
            if joined is not None:
                return joined + (out.to(joined) - joined).detach()
        elif entry is not None:
            self.track_discrete(out, entry[0], entry[1], entry[2])
        return out


@contextlib.contextmanager
def _functions_watched(mode: _Interposer, straight: bool) -> Iterator[None]:
    """`Function.apply` wrapped for the block: the Function is judged as a whole (its insides are not walked), a
    masking one recorded (locate) or made the identity on the backward pass (straight through)."""
    descriptor = torch.autograd.Function.__dict__["apply"]
    apply = descriptor.__func__
    verdicts: dict[type, bool] = {}

    def watched(cls: type, *args: Any, **kwargs: Any) -> Any:
        mode.function_depth += 1
        try:
            out = apply(cls, *args, **kwargs)
        finally:
            mode.function_depth -= 1
        carrying = _carrying(args, kwargs)
        if not carrying or mode.function_depth:
            return out
        if cls not in verdicts:
            mode.function_depth += 1
            try:
                verdicts[cls] = _masking_backward(cls, apply, args, kwargs)
            finally:
                mode.function_depth -= 1
        if not verdicts[cls]:
            return out
        if isinstance(mode, _Locator):
            mode.add(f"Function {cls.__name__}", "masking backward")
            return out
        if straight and isinstance(out, Tensor) and out.shape == carrying[0].shape:
            mode.function_depth += 1  # the mode passes our own detach through untouched
            try:
                return carrying[0] + (out - carrying[0]).detach()
            finally:
                mode.function_depth -= 1
        return out

    torch.autograd.Function.apply = classmethod(watched)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        torch.autograd.Function.apply = descriptor  # type: ignore[method-assign]


@contextlib.contextmanager
def _numpy_watched(mode: _Interposer) -> Iterator[None]:
    """torch.from_numpy is not seen by function modes: routed through the mode's CREATION handling."""
    original = torch.from_numpy

    def from_numpy(array: np.ndarray) -> Tensor:
        return torch.as_tensor(array)

    torch.from_numpy = from_numpy  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.from_numpy = original  # type: ignore[assignment]


def _within(mode: _Interposer, straight: bool):
    def call(forward: Any, *args: Any, **kwargs: Any) -> Any:
        fresh = type(mode)()
        with _functions_watched(fresh, straight), _numpy_watched(fresh), fresh:
            out = forward(*args, **kwargs)
        if isinstance(mode, _Locator) and isinstance(fresh, _Locator):
            for stop in fresh.stops:
                if (stop.op, stop.where) not in mode._seen:
                    mode._seen.add((stop.op, stop.where))
                    mode.stops.append(stop)
        return out

    return call


def locate_gradient_stops(model: nn.Module, x: Tensor) -> list[GradientStop]:
    """The operations of one forward pass on `x` that stop the gradient (see the module docstring)."""
    locator = _Locator()
    xg = x.detach().clone().requires_grad_(True)
    with wrap_forward(model, _within(locator, straight=False)) as wrapped, torch.enable_grad():
        if not wrapped:
            return []
        model(xg)
    return locator.stops


@contextlib.contextmanager
def straight_through_ops(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, every gradient stop of the model's forward pass passes the gradient straight through
    (see the module docstring); the forward values are unchanged."""
    with wrap_forward(model, _within(_StraightThrough(), straight=True)):
        yield model
