"""The JSON Schema (draft 2020-12) of a score result, and a validator that names the first offending path.

Schema validation uses `jsonschema` (a runtime dependency: every install validates what it writes and reads); the
cross-field checks below add what the schema language cannot express (per-sample arrays as long as n_examples, one
per-sample entry per attack, ...).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = "score_result.schema.json"
PER_SAMPLE_ARRAYS = ("index", "label", "clean_pred", "clean_conf", "clean_correct", "broken")
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


def _cross_field_errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, message) pairs for invariants between fields; tolerant of shapes the schema already rejects."""
    errors: list[tuple[str, str]] = []
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
