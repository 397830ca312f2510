"""Typed JSON records: dataclasses that read and write their JSON form exactly.

A `Record` dataclass maps each field to the JSON key of the same name; `from_json` builds it (nested records, lists
and dicts of records, optional fields) and `to_json` writes it back. Keys this version does not know are kept in
a field declared with `extra_field()` so a document written by a newer robustprune survives a round trip. Fields
declared with `optional_field()` are left out of the JSON when they are None (a key older documents lack);
fields declared with `runtime_field()` never reach the JSON (arrays kept beside a document, say).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

_EXTRA = "robustprune_extra"
_OMIT_NONE = "robustprune_omit_none"
_RUNTIME = "robustprune_runtime"


def extra_field() -> Any:
    """The field that keeps unknown JSON keys (a dict)."""
    return dataclasses.field(default_factory=dict, repr=False, compare=False, metadata={_EXTRA: True})


def optional_field(default: Any = None) -> Any:
    """A field left out of the JSON while it is None."""
    return dataclasses.field(default=default, metadata={_OMIT_NONE: True})


def runtime_field(default: Any = None) -> Any:
    """A field that is never written to or read from the JSON."""
    return dataclasses.field(default=default, repr=False, compare=False, metadata={_RUNTIME: True})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _load(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        return _load(arms[0], value) if len(arms) == 1 else value
    if origin is list:
        return [_load(args[0], v) for v in value] if args else list(value)
    if origin is tuple:
        return tuple(_load(args[0], v) for v in value) if args and args[-1] is Ellipsis else tuple(value)
    if origin is dict:
        return {k: _load(args[1], v) for k, v in value.items()} if args else dict(value)
    if isinstance(tp, type) and hasattr(tp, "from_json"):  # records, and typed tables such as PerSampleTable
        return tp.from_json(value)
    if isinstance(tp, type) and hasattr(tp, "from_dict") and isinstance(value, Mapping):
        return tp.from_dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _dump(value: Any) -> Any:
    if hasattr(value, "to_json") and not isinstance(value, type):
        return value.to_json()
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if hasattr(value, "to_dict") and not isinstance(value, type):
        return value.to_dict()
    return value


class Record:
    """Mixin for dataclasses whose instances are JSON objects (see the module docstring)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field]]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> typing.Self:
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__} needs a JSON object, got {type(data).__name__}")
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        known: set[str] = set()
        extra_name = None
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.metadata.get(_EXTRA):
                extra_name = f.name
                continue
            if f.metadata.get(_RUNTIME):
                continue
            known.add(f.name)
            if f.name in data:
                kwargs[f.name] = _load(hints[f.name], data[f.name])
        if extra_name is not None:
            kwargs[extra_name] = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get(_EXTRA):
                extra = dict(value or {})
            elif f.metadata.get(_RUNTIME) or (f.metadata.get(_OMIT_NONE) and value is None):
                continue
            else:
                out[f.name] = _dump(value)
        return {**extra, **out}
