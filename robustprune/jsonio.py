"""JSON in and out, one way: canonical text, no NaN (NaN is not JSON: it becomes null), and one policy for files
that are missing, not UTF-8, truncated or not JSON (a one-line UsageError naming the file and what to do)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from robustprune.errors import UsageError
from robustprune.validation import escape, read_input_text

MAX_JSON_BYTES = 4 * 2**30  # a results.json of 4 GiB would hold some 10 million examples
MAX_JSON_DEPTH = 64  # no robustprune document nests deeper than a dozen levels; deeper is not ours


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str | bytes) -> int:
    """The deepest nesting of [ and { in JSON text, strings skipped: measured before parsing, so a hostile
    document cannot exhaust the parser's recursion."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def loads_bounded(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads, refusing (ValueError) documents nested deeper than `max_depth`."""
    deepest = nesting_depth(text)
    if deepest > max_depth:
        raise ValueError(f"nested {deepest} levels deep (at most {max_depth})")
    return json.loads(text)


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: NaN and infinities become None, tuples lists, numpy/torch scalars and arrays Python
    values (the one NaN-to-null conversion: every document passes through here before it is written)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays and scalars, torch tensors
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps_json(obj: Any) -> str:
    """Canonical, human-readable JSON: sorted keys; refuses NaN (call to_jsonable first when values may hold it)."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def read_json(path: str | Path, what: str, *, fix: str = "rerun the job that wrote it") -> Any:
    """The JSON value in `path`; any reason it cannot be read is a one-line UsageError saying what to do."""
    text = read_input_text(path, what, max_bytes=MAX_JSON_BYTES)
    try:
        return loads_bounded(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} {escape(path)} is truncated or not JSON ({exc.msg} at line {exc.lineno}); {fix}"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{what} {escape(path)} is not a robustprune document: {exc}; {fix}") from None
