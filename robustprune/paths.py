"""Every file and folder name robustprune writes or reads back, and the layouts built from them.

A score directory: results.json (written last), report.md, report.html, probabilities.npz.
A train directory: model.safetensors + model.manifest.json.
A sweep directory: sweep.json, results.json, report.*, comparisons.json, figures/, cells/<key>/{model.*,
score/<score directory>, cell.json (written last), .lock}, .robustprune.lock.
"""

from __future__ import annotations

from pathlib import Path

RESULTS_FILE = "results.json"
PROBABILITIES_FILE = "probabilities.npz"
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
CHECKPOINT_FILE = "model.safetensors"
MANIFEST_SUFFIX = ".manifest.json"  # model.safetensors -> model.manifest.json
SWEEP_PLAN_FILE = "sweep.json"
COMPARISONS_FILE = "comparisons.json"
FIGURES_DIR = "figures"
CELLS_DIR = "cells"
CELL_FILE = "cell.json"
CELL_SCORE_DIR = "score"
SWEEP_LOCK = ".robustprune.lock"
CELL_LOCK = ".lock"
DEFAULT_REPORTS = Path("reports")


def manifest_path(checkpoint: str | Path) -> Path:
    """`model.safetensors` -> `model.manifest.json` (same directory)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + MANIFEST_SUFFIX)


def cell_dir(sweep_root: str | Path, key: str) -> Path:
    return Path(sweep_root) / CELLS_DIR / key


def cell_checkpoint(sweep_root: str | Path, key: str) -> Path:
    return cell_dir(sweep_root, key) / CHECKPOINT_FILE


def cell_score_dir(sweep_root: str | Path, key: str) -> Path:
    return cell_dir(sweep_root, key) / CELL_SCORE_DIR


def cell_result_relpath(key: str) -> str:
    """Where a cell record points at its score document, relative to the sweep directory."""
    return f"{CELLS_DIR}/{key}/{CELL_SCORE_DIR}/{RESULTS_FILE}"


def default_score_dir(key: str) -> Path:
    return DEFAULT_REPORTS / f"score-{key}"


def default_train_dir(recipe: str, key: str) -> Path:
    return DEFAULT_REPORTS / f"train-{recipe}-{key}"
