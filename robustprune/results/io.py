"""Result files: write a score's outputs atomically, and read them back without trusting a damaged one.

Every document is validated against the shipped JSON Schema when it is written and when it is read back.
results.json is written last, so its presence means every other file of the result is complete.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from robustprune.atomic import write_bytes, write_text
from robustprune.errors import UsageError
from robustprune.jsonio import dumps_json, read_json, to_jsonable
from robustprune.outputs import output_set
from robustprune.paths import PROBABILITIES_FILE, REPORT_HTML, REPORT_MARKDOWN, RESULTS_FILE
from robustprune.results.schema import InvalidDocument, validate_document, validate_sweep_document
from robustprune.scoring.result import ScoreResult
from robustprune.validation import escape, path_kind


def save_result(
    result: ScoreResult, out_dir: str | Path, *, html: bool = True, overwrite: bool = False
) -> dict[str, str]:
    """Write probabilities.npz, report.md, report.html and results.json into `out_dir`, as a unit
    (robustprune.outputs): they appear together or not at all, replacing a previous score result there whole. A
    folder holding anything else is refused unless `overwrite`."""
    if not isinstance(result, ScoreResult):
        raise UsageError(f"save_result() needs the ScoreResult score() returned, got {type(result).__name__}")
    if not isinstance(out_dir, str | os.PathLike):
        raise UsageError(f"save_result() needs a folder path, got {type(out_dir).__name__}")
    with output_set(out_dir, kind="score", overwrite=overwrite, what="save_result() folder") as folder:
        paths = write_result_files(result, folder.path, html=html)
    return folder.relocated(paths)


def write_result_files(result: ScoreResult, out_dir: str | Path, *, html: bool = True) -> dict[str, str]:
    """Write probabilities.npz, report.md, report.html and (last) results.json into `out_dir` (a folder being
    filled as a unit: robustprune.outputs.output_set)."""
    from robustprune.render import render_html, render_markdown  # jinja2 and matplotlib only when writing

    out = Path(out_dir)
    doc = to_jsonable(result.to_json())
    try:
        validate_document(doc)  # a document that breaks the schema fails before any write
    except InvalidDocument as exc:
        raise RuntimeError(f"robustprune built an invalid result ({exc}); nothing was written") from None
    text = dumps_json(doc)
    paths: dict[str, Path] = {}
    if result.clean_probs is not None and result.adversarial_probs is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, clean=result.clean_probs, adversarial=result.adversarial_probs)
        paths["probabilities"] = write_bytes(out / PROBABILITIES_FILE, buffer.getvalue())
    paths["markdown"] = write_text(out / REPORT_MARKDOWN, render_markdown(result))
    if html:
        paths["html"] = write_text(out / REPORT_HTML, render_html(result))
    paths["results"] = write_text(out / RESULTS_FILE, text)
    return {key: str(path) for key, path in paths.items()}


def load_document(path: str | Path, *, require_per_sample: bool = True) -> dict[str, Any]:
    """Read and validate a results.json (or the one inside a directory): a score result against the shipped JSON
    Schema, a sweep's against its record shape, both against the versions this robustprune reads. Damaged,
    foreign or newer documents are one-line errors, never trusted.

    `require_per_sample=False` accepts a score result without its per-sample table (for `check`, which reports
    such a result as not comparable instead of refusing the whole comparison).
    """
    path = Path(path)
    if path_kind(path, "result file") == "dir":
        path = path / RESULTS_FILE
    try:
        doc = read_json(path, "result file")
    except UsageError as err:
        if "does not exist" in str(err):
            raise UsageError(
                f"result file {escape(path)} not found; pass a results.json or the directory that holds one"
            ) from None
        raise
    check_document(doc, str(path), require_per_sample=require_per_sample)
    return doc


def check_document(doc: Any, where: str, *, require_per_sample: bool = True) -> None:
    """Validate a score or sweep document as read from `where` (UsageError naming it when invalid)."""
    try:
        if isinstance(doc, dict) and doc.get("kind") == "sweep":
            validate_sweep_document(doc)
        else:
            validate_document(doc, require_per_sample=require_per_sample)
    except InvalidDocument as exc:
        raise UsageError(f"{escape(where)} is not a valid robustprune result: {exc}") from None


def load_result(path: str | Path, *, require_per_sample: bool = True) -> ScoreResult:
    """A score result (typed) from its results.json or directory; the probabilities are loaded when present."""
    if not isinstance(path, str | os.PathLike):
        raise UsageError(f"load_result() needs a results.json path or its folder, got {type(path).__name__}")
    path = Path(path)
    doc = load_document(path, require_per_sample=require_per_sample)
    if doc.get("kind") != "score":
        raise UsageError(f"{escape(path)} is a {doc.get('kind')!r} result, not a score; pass a score's results.json")
    result = ScoreResult.from_json(doc)
    probabilities = (path if path_kind(path, "result file") == "dir" else path.parent) / PROBABILITIES_FILE
    if path_kind(probabilities, "probabilities file") == "file":
        with np.load(probabilities, allow_pickle=False) as npz:
            result.clean_probs, result.adversarial_probs = npz["clean"], npz["adversarial"]
    return result
