"""Result files: write a score's outputs atomically, and read them back without trusting a damaged one.

results.json is written last, so its presence means every other file of the result is complete.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robustprune.atomic import dumps_json, write_bytes, write_text
from robustprune.errors import UsageError

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


def load_document(path: str | Path) -> dict[str, Any]:
    """Read a results.json (or the results.json inside a directory); damaged files are reported, never trusted."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"result file {path} not found; pass a results.json or the directory that holds one") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"result file {path} is truncated or not JSON ({exc.msg} at line {exc.lineno}); rerun the job that wrote it"
        ) from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise UsageError(f"{path} is not a robustprune result (no schema_version)")
    return doc
