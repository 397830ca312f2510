"""Result files: write a score's outputs atomically, and read them back without trusting a damaged one.

results.json is written last, so its presence means every other file of the result is complete.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robustprune.atomic import write_bytes, write_text
from robustprune.errors import UsageError
from robustprune.jsonio import dumps_json
from robustprune.validation import escape, path_kind, read_input_text

if TYPE_CHECKING:
    from robustprune.scoring import ScoreResult

RESULTS_FILE = "results.json"
PROBABILITIES_FILE = "probabilities.npz"


def save_result(result: ScoreResult, out_dir: str | Path, *, html: bool = True) -> dict[str, str]:
    """Write probabilities.npz, report.md, report.html and (last) results.json into `out_dir`."""
    from robustprune.reporting import render_html, render_markdown

    out = Path(out_dir)
    doc = result.document
    text = dumps_json(doc)  # serialise first: a document that is not valid JSON fails before any write
    buffer = io.BytesIO()
    np.savez_compressed(buffer, clean=result.clean_probs, adversarial=result.adversarial_probs)
    paths = {"probabilities": write_bytes(out / PROBABILITIES_FILE, buffer.getvalue())}
    paths["markdown"] = write_text(out / "report.md", render_markdown(doc))
    if html:
        paths["html"] = write_text(out / "report.html", render_html(doc))
    paths["results"] = write_text(out / RESULTS_FILE, text)
    return {key: str(path) for key, path in paths.items()}


MAX_RESULT_BYTES = 4 * 2**30  # a results.json of 4 GiB would be some 10 million examples


def load_document(path: str | Path, *, require_per_sample: bool = True) -> dict[str, Any]:
    """Read and validate a results.json (or the one inside a directory): a score result against the shipped JSON
    Schema, a sweep's against its record shape, both against the versions this robustprune reads. Damaged,
    foreign or newer documents are one-line errors, never trusted.

    `require_per_sample=False` accepts a score result without its per-sample table (for `check`, which reports
    such a result as not comparable instead of refusing the whole comparison).
    """
    from robustprune.schema import validate_document, validate_sweep_document

    path = Path(path)
    if path_kind(path, "result file") == "dir":
        path = path / RESULTS_FILE
    shown = escape(path)
    try:
        text = read_input_text(path, "result file", max_bytes=MAX_RESULT_BYTES)
    except UsageError as err:
        if "does not exist" in str(err):
            raise UsageError(
                f"result file {shown} not found; pass a results.json or the directory that holds one"
            ) from None
        raise
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"result file {shown} is truncated or not JSON ({exc.msg} at line {exc.lineno}); rerun the job that wrote it"
        ) from None
    try:
        if isinstance(doc, dict) and doc.get("kind") == "sweep":
            validate_sweep_document(doc)
        else:
            validate_document(doc, require_per_sample=require_per_sample)
    except ValueError as exc:
        raise UsageError(f"{shown} is not a valid robustprune result: {exc}") from None
    return doc
