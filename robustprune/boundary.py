"""The one boundary where user code meets the engine.

Every call into code robustprune did not write (a model factory, a model's forward pass, an attack class named in
a battery, a dataset reader registered by a user) goes through here, so that whatever it does (raise any
exception, call sys.exit, return something odd) ends as one line that names the code, what it did and the stage
it was in: `the model raised RuntimeError('boom') on its 2nd call (battery, attack apgd-ce, batch of 64)`.

Code that is unusable from the start (a factory that fails, a model that breaks its contract on clean batches)
is a UsageError (exit 2); code that fails during a run is a UserCodeError (exit 1). KeyboardInterrupt is the
user's own and always passes through.

The stage is a stack of short names pushed by the engine (`stage("battery", "attack apgd-ce")`), read when a
message is written; it lives in a context variable, so threads and nested stages keep their own.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from robustprune.errors import ModelChanged, UsageError, UserCodeError, VerificationError

T = TypeVar("T")
_STAGES: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("robustprune_stages", default=())
# Exceptions that are already one engine-written line (a nested boundary, a verification): passed on untouched.
ENGINE_ERRORS = (UsageError, UserCodeError, VerificationError)
DETAIL_CHARS = 160  # an exception's text is cut here: one line, whatever the user code put in it


@contextlib.contextmanager
def stage(*parts: str) -> Iterator[None]:
    """Name what the engine is doing for the messages written inside the block (`stage("battery", "attack pgd")`)."""
    token = _STAGES.set(_STAGES.get() + tuple(p for p in parts if p))
    try:
        yield
    finally:
        _STAGES.reset(token)


def current_stage() -> str:
    """The stages entered, outermost first, joined for a message ("battery, attack apgd-ce"); "" outside any."""
    return ", ".join(_STAGES.get())


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 21st ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def describe_exception(exc: BaseException) -> str:
    """What user code did, for a message: `raised RuntimeError('boom')`, `called sys.exit(3)`."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > DETAIL_CHARS:
        text = text[: DETAIL_CHARS - 3] + "..."
    return f"raised {type(exc).__name__}({text!r})" if text else f"raised {type(exc).__name__}"


def in_stage(extra: str = "") -> str:
    """` (stage, extra)` for the end of a message, or "" when there is nothing to say."""
    parts = [p for p in (current_stage(), extra) if p]
    return f" ({', '.join(parts)})" if parts else ""


def call_user(fn: Callable[..., T], *args: Any, who: str, unusable: bool, fix: str = "", **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, a piece of user code named `who` ("the model factory mypkg.nets:build").

    Any exception it raises, SystemExit included, becomes one line: a UsageError when `unusable` (the code cannot
    be used at all: exit 2), else a UserCodeError (it failed during a run: exit 1). Engine errors raised inside
    (a nested boundary's message, a failed verification) pass through unchanged, as does KeyboardInterrupt.
    """
    try:
        return fn(*args, **kwargs)
    except ENGINE_ERRORS:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  SystemExit and anything else the user's code may raise
        error = UsageError if unusable else UserCodeError
        raise error(f"{who} {describe_exception(exc)}{in_stage()}{'; ' + fix if fix else ''}") from None


def import_user_module(module_name: str, purpose: str) -> Any:
    """Import a user's module named on the command line or in a battery (`purpose`: "--model pkg.mod:f"); whatever
    its import does (raise, call sys.exit) is one UsageError line: `cannot import 'pkg.mod' for --model ...: ...`."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  the user's module: any import failure is theirs to fix
        if isinstance(exc, SystemExit):
            detail = f"its import called sys.exit({exc.code!r})"
        else:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            detail = text[:DETAIL_CHARS] or type(exc).__name__
        raise UsageError(f"cannot import {module_name!r} for {purpose}: {detail}") from None


class Isolated:
    """What an isolated stage ended with: `error` is None when it completed, else its one-line reason."""

    def __init__(self) -> None:
        self.error: str | None = None

    def __bool__(self) -> bool:
        return self.error is not None


@contextlib.contextmanager
def isolated(*parts: str) -> Iterator[Isolated]:
    """Run a stage that must never end a score (a health check, an escalation, the audit, the eps curve, the
    efficiency measurement): any exception inside, user code's or the engine's own, is caught and its one-line
    reason left in the yielded record for the result to carry as an `error`. Two things still end the run: the
    user's KeyboardInterrupt, and ModelChanged (every later number would describe another model)."""
    outcome = Isolated()
    with stage(*parts):
        try:
            yield outcome
        except (KeyboardInterrupt, ModelChanged):
            raise
        except ENGINE_ERRORS as exc:
            outcome.error = _one_line(str(exc))
        except BaseException as exc:  # noqa: BLE001  the isolation layer: nothing inside may end the score
            outcome.error = f"{describe_exception(exc)}{in_stage()}"


def _one_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "failed"
    return line
