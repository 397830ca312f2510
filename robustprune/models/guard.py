"""The model boundary: what stands between a user's model and the engine while it is evaluated.

While a `ModelGuard` is installed, every call of the model, whoever makes it (the engine, torchattacks,
pyautoattack, a user's attack class, a health check), goes through one wrapper around its forward pass that:
- hands the forward pass copies of its inputs, so a model that edits its input in place (`x.mul_(0.5)`) edits its
  copy and never the examples the engine verifies, fingerprints and reports;
- feeds a float16 / bfloat16 / float64 model inputs of its own dtype (the cast is differentiable, so gradients still
  reach the float32 input);
- checks every output: a floating tensor of shape (batch, classes); float16 / bfloat16 logits are widened to
  float32 (exactly), so losses and metrics never run in half precision;
- turns anything the forward pass raises, SystemExit included, into one line naming the call and the stage
  (robustprune.boundary): a UsageError before the model contract is passed (exit 2), a UserCodeError after (exit 1).

`ModelState` is the other half: a snapshot of every parameter, buffer and module mode, compared after every attack
and stage, restored and reported (ModelChanged) when something changed the model.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from robustprune.boundary import ENGINE_ERRORS, describe_exception, in_stage, ordinal
from robustprune.errors import ModelChanged, UsageError, UserCodeError

WIDENED = (torch.float16, torch.bfloat16)  # logits in these are widened to float32 (exact) for losses and metrics
Forward = Callable[..., Any]


@contextlib.contextmanager
def wrap_forward(model: nn.Module, wrapper: Callable[..., Any]) -> Iterator[bool]:
    """Inside the block, `model(...)` and `model.forward(...)` run `wrapper(forward, *args, **kwargs)`, where
    `forward` is what they ran before (wrappers stack). Set on the instance, so the model's class, its modules and
    its state are untouched; a deep copy made inside the block calls its own class's forward. Yields False (and
    wraps nothing) for a module that refuses a new attribute."""
    had = "forward" in model.__dict__
    previous = model.__dict__.get("forward")
    inner = model.forward

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self is not model:  # a deep copy: it has no wrapper of its own
            return type(self).forward(self, *args, **kwargs)
        return wrapper(inner, *args, **kwargs)

    try:
        object.__setattr__(model, "forward", types.MethodType(forward, model))
    except (AttributeError, RuntimeError, TypeError):
        yield False
        return
    try:
        yield True
    finally:
        if had:
            object.__setattr__(model, "forward", previous)
        else:
            with contextlib.suppress(AttributeError):
                object.__delattr__(model, "forward")


def float_dtype(model: nn.Module) -> torch.dtype | None:
    """The one floating dtype of the model's parameters (buffers when it has none); None when there are none or
    several (a mixed-precision model casts for itself)."""
    tensors = list(model.parameters()) or list(model.buffers())
    found = {t.dtype for t in tensors if t.is_floating_point()}
    return found.pop() if len(found) == 1 else None


def describe_output(out: Any) -> str:
    """What a forward pass returned, for a message: "a tuple of 2 (Tensor (8, 10), Tensor (8, 64))"."""
    if out is None:
        return "None"
    if isinstance(out, Tensor):
        dtype = str(out.dtype).removeprefix("torch.")
        return f"{'an' if dtype[0] in 'aeiou' else 'a'} {dtype} tensor of shape {tuple(out.shape)}"
    if isinstance(out, tuple | list):
        items = ", ".join(
            f"Tensor {tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__ for v in list(out)[:3]
        )
        more = ", ..." if len(out) > 3 else ""
        return f"a {type(out).__name__} of {len(out)} ({items}{more})"
    if isinstance(out, dict):
        keys = ", ".join(repr(k) for k in list(out)[:4])
        return f"a dict with keys {keys}{', ...' if len(out) > 4 else ''}"
    shape = getattr(out, "shape", None)
    return f"a {type(out).__module__}.{type(out).__name__}" + (f" of shape {tuple(shape)}" if shape else "")


class ModelGuard:
    """The wrapper every call of the model goes through while installed (see the module docstring)."""

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        self.model = model
        self.num_classes = num_classes
        self.calls = 0
        self.contract_passed = False  # failures before it are the model's unusability (exit 2), after it exit 1
        self.model_dtype = float_dtype(model)
        self.input_dtype = self.model_dtype if self.model_dtype not in (None, torch.float32) else None
        self.output_dtypes: set[torch.dtype] = set()
        self.wrapped = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[ModelGuard]:
        with wrap_forward(self.model, self._call) as wrapped:
            self.wrapped = wrapped
            try:
                yield self
            finally:
                self.wrapped = False

    def _copy(self, value: Any) -> Any:
        if not isinstance(value, Tensor):
            return value
        if self.input_dtype is not None and value.is_floating_point():
            return value.to(self.input_dtype, copy=True)
        return value.clone()

    def _call(self, forward: Forward, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        call = self.calls
        args = tuple(self._copy(a) for a in args)
        kwargs = {key: self._copy(v) for key, v in kwargs.items()}
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
        batch = int(first.shape[0]) if first is not None and first.ndim else None
        try:
            out = forward(*args, **kwargs)
        except ENGINE_ERRORS:
            raise
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  the model's own failure, SystemExit included
            self.fail(f"{describe_exception(exc)} on its {ordinal(call)} call", batch)
        return self.check_output(out, call, batch)

    def fail(self, what: str, batch: int | None = None, fix: str = "") -> NoReturn:
        error = UserCodeError if self.contract_passed else UsageError
        where = in_stage(f"batch of {batch}" if batch is not None else "")
        raise error(f"the model {what}{where}{'; ' + fix if fix else ''}")

    def check_output(self, out: Any, call: int, batch: int | None) -> Tensor:
        """The logits of one call, or the one-line reason they are not logits."""
        k = self.num_classes
        nth = f"on its {ordinal(call)} call"
        if not isinstance(out, Tensor):
            hint = (
                "return out['logits']"
                if isinstance(out, dict) and "logits" in out
                else "return the logits tensor alone"
            )
            self.fail(
                f"returned {describe_output(out)} {nth}, not a tensor of logits", batch, f"{hint}, shape (N, {k})"
            )
        if out.is_complex() or not out.is_floating_point():
            self.fail(
                f"returned {describe_output(out)} {nth}; logits must be real floating point",
                batch,
                "return the unnormalized float scores before any argmax or cast",
            )
        rows = batch if batch is not None else "N"
        if out.ndim != 2 or (batch is not None and out.shape[0] != batch) or out.shape[1] != k:
            self.fail(
                f"returned shape {tuple(out.shape)} {nth} where ({rows}, {k}) logits were due",
                batch,
                f"return one row of {k} logits per input example",
            )
        self.output_dtypes.add(out.dtype)
        return out.float() if out.dtype in WIDENED else out

    def record(self) -> dict[str, Any]:
        """What the guard knows about the model's numbers, for the model contract in the result."""
        names = sorted(str(d).removeprefix("torch.") for d in self.output_dtypes)
        return {
            "model_dtype": str(self.model_dtype).removeprefix("torch.") if self.model_dtype else "mixed or none",
            "input_dtype": str(self.input_dtype or torch.float32).removeprefix("torch."),
            "output_dtype": ", ".join(names) or "none seen",
            "inputs_copied": self.wrapped,
            "calls": self.calls,
        }


class ModelState:
    """A snapshot of what nothing but training may change: every parameter's and buffer's value and every module's
    train/eval flag. The engine compares it after every attack and stage; a change is restored from the snapshot
    (the caller's model comes back as it was handed over) and reported as ModelChanged naming the stage."""

    def __init__(self, model: nn.Module) -> None:
        self.modes = [(name or "<model>", m.training) for name, m in model.named_modules()]
        self.values = {("parameter", name): t.detach().clone() for name, t in model.named_parameters()} | {
            ("buffer", name): t.detach().clone() for name, t in model.named_buffers()
        }

    def _current(self, model: nn.Module) -> dict[tuple[str, str], Tensor]:
        return {("parameter", n): t for n, t in model.named_parameters()} | {
            ("buffer", n): t for n, t in model.named_buffers()
        }

    def changes(self, model: nn.Module) -> list[str]:
        now = {name or "<model>": m.training for name, m in model.named_modules()}
        out = [
            f"module {name!r} switched to {'train' if now.get(name) else 'eval'} mode"
            for name, flag in self.modes
            if now.get(name) != flag
        ]
        current = self._current(model)
        for key, before in self.values.items():
            tensor = current.get(key)
            if tensor is None:
                out.append(f"{key[0]} {key[1]!r} was removed")
            elif tensor.shape != before.shape or not torch.equal(before, tensor.detach().to(before.device)):
                out.append(f"{key[0]} {key[1]!r} changed")
        out += [f"{kind} {name!r} was added" for kind, name in current.keys() - self.values.keys()]
        return out

    def restore(self, model: nn.Module) -> None:
        """Put back every value and mode the snapshot holds (what can be put back: same names and shapes)."""
        current = self._current(model)
        with torch.no_grad():
            for key, before in self.values.items():
                tensor = current.get(key)
                if tensor is not None and tensor.shape == before.shape:
                    tensor.copy_(before.to(device=tensor.device, dtype=tensor.dtype))
        flags = dict(self.modes)
        for name, module in model.named_modules():
            if (name or "<model>") in flags:
                module.training = flags[name or "<model>"]

    def require_unchanged(self, model: nn.Module, error: Callable[[str], Exception] | None = None) -> None:
        """Raise `error(what changed)` (default: ModelChanged naming the stage) after restoring the snapshot, when
        the model is not as the snapshot found it."""
        changed = self.changes(model)
        if not changed:
            return
        self.restore(model)
        what = "; ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        if error is None:
            raise ModelChanged(
                f"the model changed while it was evaluated ({what}){in_stage()}: every later number would describe "
                "another model, so nothing is counted (the model was restored to its state before the run)"
            )
        raise error(what)
