"""The score-result JSON Schema and `validate_document`: a real document passes, damaged ones fail at a named path."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import robustprune.results.schema as schema_mod
from robustprune.jsonio import dumps_json
from robustprune.results.schema import load_schema, schema_path, validate_document

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    from robustprune.scoring import score

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    checkpoint = {
        "path": "m.safetensors",
        "sha256": "0f" * 32,
        "format": "safetensors",
        "trusted": False,
        "folded_pruning": False,
        "manifest": None,
        "size_bytes": 10,
        "masked": [],
    }
    return score(
        model, "digits", "quick", eps=0.1, n=24, batch_size=64, checkpoint=checkpoint, command=["robustprune", "score"]
    ).document


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_load_schema_returns_an_independent_copy() -> None:
    first = load_schema()
    first["required"].clear()
    assert "clean_acc" in load_schema()["required"]


def test_schema_ships_with_the_package() -> None:
    path = schema_path()
    assert path.is_file() and path.parent == Path(schema_mod.__file__).parent
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "results/schema/*.json" in pyproject["tool"]["setuptools"]["package-data"]["robustprune"]


def test_real_document_validates(document: dict[str, Any]) -> None:
    validate_document(document)
    validate_document(json.loads(dumps_json(document)))  # what results.json holds after a round trip


def _set(doc: dict[str, Any], path: tuple, value: Any) -> None:
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


_DELETE = object()

BROKEN = [
    (("clean_acc",), "95.0", "clean_acc"),
    (("robust_acc",), _DELETE, "robust_acc: 'robust_acc' is a required property"),
    (("norm",), "L3", "norm"),
    (("eps",), -0.1, "eps"),
    (("clean_acc",), 100.5, "clean_acc"),
    (("clean_acc_ci",), [10.0], "clean_acc_ci"),
    (("schema_version",), "2.0", "schema_version"),
    (("n_examples",), True, "n_examples"),
    (("attacks", 0, "robust_acc"), _DELETE, "attacks[0].robust_acc:"),
    (("attacks", 0, "n_forward"), -1, "attacks[0].n_forward"),
    (("calibration", "clean", "ece", "binning"), _DELETE, "calibration.clean.ece.binning"),
    (("per_sample", "clean_conf", 0), 1.5, "per_sample.clean_conf[0]"),
    (("provenance", "checkpoint", "sha256"), "not-a-digest", "provenance.checkpoint.sha256"),
    (("provenance", "command"), "robustprune score", "provenance.command"),
    (("sparsity", "sparsity"), 43.0, "sparsity.sparsity"),
]


@pytest.mark.parametrize(
    ("path", "value", "where"), BROKEN, ids=[".".join(map(str, p)) + f"-{i}" for i, (p, _, _) in enumerate(BROKEN)]
)
def test_broken_documents_fail_at_their_path(document: dict[str, Any], path: tuple, value: Any, where: str) -> None:
    doc = copy.deepcopy(document)
    _set(doc, path, value)
    with pytest.raises(ValueError, match=r"invalid score result at " + where.replace("[", r"\[").replace("]", r"\]")):
        validate_document(doc)


def test_cross_field_checks(document: dict[str, Any]) -> None:
    doc = copy.deepcopy(document)
    doc["per_sample"]["broken"].pop()
    with pytest.raises(ValueError, match=r"per_sample\.broken: has 23 entries, n_examples is 24"):
        validate_document(doc)
    doc = copy.deepcopy(document)
    doc["per_sample"]["attacks"]["renamed"] = doc["per_sample"]["attacks"].pop("pgd")
    with pytest.raises(ValueError, match="differ from the attack labels"):
        validate_document(doc)
    doc = copy.deepcopy(document)
    doc["threat_model"] = "L2"
    with pytest.raises(ValueError, match="differs from norm"):
        validate_document(doc)


def test_without_jsonschema_only_cross_field_checks_run(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schema_mod, "_validator", lambda: None)
    doc = copy.deepcopy(document)
    doc["dataset"] = 95  # the schema validator stubbed out: only the cross-field and meaning checks below run
    validate_document(doc)
    doc["per_sample"]["label"].append(0)
    with pytest.raises(ValueError, match="per_sample.label"):
        validate_document(doc)
    with pytest.raises(ValueError, match="expected an object"):
        validate_document([])
