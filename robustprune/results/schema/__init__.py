"""The JSON Schema (draft 2020-12) of a score result, and a validator that names the first offending path.

Schema validation uses `jsonschema` (a runtime dependency: every install validates what it writes and reads); the
cross-field checks below add what the schema language cannot express (per-sample arrays as long as n_examples, one
per-sample entry per attack, ...).
"""

from __future__ import annotations

import copy
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from robustprune.scoring.bounds_report import PROVEN

SCHEMA_FILE = "score_result.schema.json"
PER_SAMPLE_ARRAYS = ("index", "label", "clean_pred", "clean_conf", "clean_correct", "broken", "status")
PER_ATTACK_ARRAYS = ("attempted", "broken", "adv_pred", "adv_conf", "norm")


def schema_path() -> Path:
    return Path(__file__).with_name(SCHEMA_FILE)


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return json.loads(schema_path().read_text(encoding="utf-8"))


def load_schema() -> dict[str, Any]:
    """A fresh copy of the schema (callers may mutate it without touching the cached one)."""
    return copy.deepcopy(_schema())


class InvalidDocument(ValueError):
    """A document that is not a valid robustprune result of a version this robustprune reads."""


SCHEMA_VERSIONS = ("1.0",)  # the score/sweep document versions this robustprune reads


@lru_cache(maxsize=2)
def _validator(require_per_sample: bool = True) -> Any:
    from jsonschema import Draft202012Validator  # a declared dependency: a missing one is a broken install

    schema = load_schema()
    if not require_per_sample:  # `check` reads such a document to say it is not comparable, not to crash on it
        schema["required"] = [k for k in schema["required"] if k != "per_sample"]
    return Draft202012Validator(schema)


def format_path(parts: Any) -> str:
    """("attacks", 0, "robust_acc") -> "attacks[0].robust_acc"; the empty path is the document itself."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<document>"


VERDICTS = ("trusted", "caution", "untrusted")
TOLERANCE = 1e-6  # percentage points: accuracies derived from the same table agree to rounding


def _first_non_finite(value: Any, path: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """The path of the first NaN or infinity in a document (robustprune writes none: NaN becomes null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _first_non_finite(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_non_finite(item, (*path, i))
            if found is not None:
                return found
    return None


def _percent(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 100


def _meaning_errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """What a valid-looking document must also mean: no NaN, accuracies in [0, 100], robust never above clean,
    and a headline the per-sample table agrees with (an edited number is refused, not rendered)."""
    errors: list[tuple[str, str]] = []
    bad = _first_non_finite(doc)
    if bad is not None:
        errors.append((format_path(bad), "is NaN or infinite; robustprune never writes one (the file was edited)"))
        return errors
    for key in ("clean_acc", "robust_acc", "autoattack_acc"):
        value = doc.get(key)
        if value is not None and not _percent(value):
            errors.append((key, f"{value!r} is not an accuracy in [0, 100]"))
    clean, robust = doc.get("clean_acc"), doc.get("robust_acc")
    if _percent(clean) and _percent(robust) and robust > clean + TOLERANCE:
        errors.append(("robust_acc", f"{robust} is above the clean accuracy {clean}: no attack raises accuracy"))
    per_sample = doc.get("per_sample")
    if isinstance(per_sample, dict):
        correct, broken = per_sample.get("clean_correct"), per_sample.get("broken")
        if isinstance(correct, list) and correct and all(isinstance(v, bool) for v in correct) and _percent(clean):
            measured = 100.0 * sum(correct) / len(correct)
            if abs(measured - clean) > TOLERANCE:
                errors.append(("clean_acc", f"{clean} but the per-sample table says {measured:.6g}"))
        if isinstance(broken, list) and broken and all(isinstance(v, bool) for v in broken) and _percent(robust):
            measured = 100.0 * (len(broken) - sum(broken)) / len(broken)
            if abs(measured - robust) > TOLERANCE:
                errors.append(("robust_acc", f"{robust} but the per-sample table says {measured:.6g}"))
            if isinstance(correct, list) and len(correct) == len(broken):
                wrong = [i for i, (c, b) in enumerate(zip(correct, broken, strict=True)) if c is False and b is False]
                if wrong:
                    errors.append((f"per_sample.broken[{wrong[0]}]", "an example misclassified clean is not broken"))
    for key in ("clean_acc", "robust_acc"):
        ci, value = doc.get(f"{key}_ci"), doc.get(key)
        shaped = isinstance(ci, list) and len(ci) == 2 and _percent(value) and all(_percent(v) for v in ci)
        if shaped and not ci[0] - TOLERANCE <= value <= ci[1] + TOLERANCE:
            errors.append((f"{key}_ci", f"interval {ci} does not contain {key} {value}"))
    return errors + _bounds_errors(doc)


def _bounds_errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The bracket must be one: certified <= attacked, the attacked side the headline, the per-sample statuses
    agreeing with both (a lower bound edited above the upper one is refused)."""
    bounds, robust = doc.get("bounds"), doc.get("robust_acc")
    if not isinstance(bounds, dict) or bounds.get("method") in (None, "none") or not _percent(robust):
        return []
    errors = []
    certified, upper = bounds.get("certified_acc"), bounds.get("robust_acc")
    if _percent(upper) and abs(upper - robust) > TOLERANCE:
        errors.append(("bounds.robust_acc", f"{upper} but the headline robust_acc is {robust}"))
    if _percent(certified) and certified > robust + TOLERANCE:
        errors.append(("bounds.certified_acc", f"{certified} is above the attacked robust accuracy {robust}"))
    status = (doc.get("per_sample") or {}).get("status")
    if isinstance(status, list) and status and _percent(certified):
        proven = 100.0 * sum(s in PROVEN for s in status) / len(status)
        if abs(proven - certified) > TOLERANCE:
            errors.append(("bounds.certified_acc", f"{certified} but the per-sample statuses say {proven:.6g}"))
    return errors


def _cross_field_errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, message) pairs for invariants between fields; tolerant of shapes the schema already rejects."""
    errors: list[tuple[str, str]] = _meaning_errors(doc)
    if doc.get("threat_model") != doc.get("norm"):
        errors.append(
            ("threat_model", f"threat_model {doc.get('threat_model')!r} differs from norm {doc.get('norm')!r}")
        )
    for key in ("clean_acc_ci", "robust_acc_ci"):
        ci = doc.get(key)
        if isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci) and ci[0] > ci[1]:
            errors.append((key, f"interval {ci} has lo > hi"))
    n = doc.get("n_examples")
    per_sample = doc.get("per_sample")
    if not isinstance(n, int) or not isinstance(per_sample, dict):
        return errors
    for key in PER_SAMPLE_ARRAYS:
        values = per_sample.get(key)
        if isinstance(values, list) and len(values) != n:
            errors.append((f"per_sample.{key}", f"has {len(values)} entries, n_examples is {n}"))
    columns = per_sample.get("attacks")
    attacks = doc.get("attacks")
    if isinstance(columns, dict) and isinstance(attacks, list):
        labels = [a.get("label") for a in attacks if isinstance(a, dict)]
        if sorted(columns) != sorted(labels):
            errors.append(("per_sample.attacks", f"keys {sorted(columns)} differ from the attack labels {labels}"))
        for label in sorted(columns):
            for key in PER_ATTACK_ARRAYS:
                values = columns[label].get(key) if isinstance(columns[label], dict) else None
                if isinstance(values, list) and len(values) != n:
                    errors.append(
                        (f"per_sample.attacks.{label}.{key}", f"has {len(values)} entries, n_examples is {n}")
                    )
    return errors


def check_version(doc: Any, kind: str = "score") -> None:
    """Raise InvalidDocument unless `doc` is an object with a schema_version this robustprune reads."""
    if not isinstance(doc, dict):
        raise InvalidDocument(f"invalid {kind} result at <document>: expected an object, got {type(doc).__name__}")
    if "schema_version" not in doc:
        raise InvalidDocument(f"invalid {kind} result at schema_version: not a robustprune result (none is set)")
    version = doc["schema_version"]
    if version not in SCHEMA_VERSIONS:
        raise InvalidDocument(
            f"invalid {kind} result at schema_version: {version!r} is not a version this robustprune reads "
            f"({', '.join(SCHEMA_VERSIONS)}); it was written by another version: use a matching robustprune or rescore"
        )


def validate_sweep_document(doc: Any) -> None:
    """Raise InvalidDocument unless `doc` is a sweep's results.json: kind, version and a list of cell records."""
    check_version(doc, "sweep")
    cells = doc.get("cells")
    if not isinstance(cells, list):
        raise InvalidDocument("invalid sweep result at cells: expected a list of cell records")
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise InvalidDocument(f"invalid sweep result at cells[{i}]: expected an object")
        for key, kind in (("key", str), ("recipe", str), ("sparsity", int | float), ("seed", int)):
            if not isinstance(cell.get(key), kind) or isinstance(cell.get(key), bool):
                raise InvalidDocument(f"invalid sweep result at cells[{i}].{key}: missing or of the wrong type")
        bad = _first_non_finite(cell)
        if bad is not None:
            raise InvalidDocument(f"invalid sweep result at cells[{i}].{format_path(bad)}: NaN or infinite")
        for key in ("clean_acc", "robust_acc", "battery_robust_acc", "worst_head_robust_acc"):
            value = cell.get(key)
            if value is not None and not _percent(value):
                raise InvalidDocument(
                    f"invalid sweep result at cells[{i}].{key}: {value!r} is not an accuracy in [0, 100]"
                )
        clean, robust = cell.get("clean_acc"), cell.get("robust_acc")
        if _percent(clean) and _percent(robust) and robust > clean + TOLERANCE:
            raise InvalidDocument(f"invalid sweep result at cells[{i}].robust_acc: {robust} is above the clean {clean}")
        if cell.get("verdict") is not None and cell.get("verdict") not in VERDICTS:
            raise InvalidDocument(
                f"invalid sweep result at cells[{i}].verdict: {cell.get('verdict')!r} is not one of {', '.join(VERDICTS)}"
            )


def validate_document(doc: Any, *, require_per_sample: bool = True) -> None:
    """Raise ValueError naming the first invalid path of a score result; return None when it is valid."""
    check_version(doc)
    validator = _validator() if require_per_sample else _validator(False)
    if validator is not None:
        from jsonschema.exceptions import best_match

        error = best_match(validator.iter_errors(doc))
        if error is not None:
            path = list(error.absolute_path)
            if error.validator == "required" and isinstance(error.instance, dict):
                # Point at the missing key itself rather than at the object that lacks it.
                path.append(next(k for k in error.validator_value if k not in error.instance))
            raise InvalidDocument(f"invalid score result at {format_path(path)}: {error.message}")
    elif not isinstance(doc, dict):
        raise InvalidDocument(f"invalid score result at <document>: expected an object, got {type(doc).__name__}")
    errors = _cross_field_errors(doc)
    if errors:
        path, message = errors[0]
        raise InvalidDocument(f"invalid score result at {path}: {message}")


__all__ = [
    "SCHEMA_VERSIONS",
    "InvalidDocument",
    "check_version",
    "format_path",
    "load_schema",
    "schema_path",
    "validate_document",
    "validate_sweep_document",
]
