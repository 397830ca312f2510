"""Typed settings: one check of a value against its default's type, finiteness and documented bound, used by every
spec (batteries, recipes, sweeps) whether it comes from a flag, a TOML file or Python."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from robustprune.errors import UsageError
from robustprune.validation import BOUNDS, INT_LIMIT, check_float, check_int, escape

ParamValue = bool | int | float | str


def coerce_setting(value: ParamValue, default: ParamValue, where: str, key: str | None = None) -> ParamValue:
    """Check `value` against the type of its default (ints are accepted where floats are expected): numbers must
    be finite and inside the documented bound for `key` (validation.BOUNDS), any integer inside +-INT_LIMIT."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {escape(repr(value))}")
        return value
    if isinstance(default, int):
        value = check_int(value, where, bound=key if key in BOUNDS else None)
        if abs(value) > INT_LIMIT:
            raise UsageError(f"{where} = {value} is beyond any sensible setting (|value| <= {INT_LIMIT:,})")
        return value
    if isinstance(default, float):
        return check_float(value, where, bound=key if key in BOUNDS else None)
    if not isinstance(value, str):
        raise UsageError(f"{where} must be a string, got {escape(repr(value))}")
    return value


def check_fields(spec: Any, where: str) -> None:
    """Every bool/int/float field of a frozen spec dataclass through coerce_setting, against its own default's
    type: specs built in Python get exactly the checks their TOML form gets."""
    for f in fields(spec):
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool | int | float):
            value = coerce_setting(getattr(spec, f.name), default, f"{where} {f.name}", f.name)
            object.__setattr__(spec, f.name, value)
