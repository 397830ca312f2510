"""What a command prints on stdout: the human summary (default), one JSON object (`--json`, for scripts and CI), or
nothing (`--quiet`). Errors always go to stderr as one line; files are written either way."""

from __future__ import annotations

import argparse
import json
from typing import Any

from robustprune.jsonio import to_jsonable


def add_output_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    group.add_argument("--quiet", action="store_true", help="print nothing on stdout (files are still written)")


def emit(args: argparse.Namespace, text: str, data: dict[str, Any]) -> None:
    """Print `text` for people, `data` as one line of JSON with --json, nothing with --quiet."""
    if getattr(args, "quiet", False):
        return
    if getattr(args, "json", False):
        print(json.dumps(to_jsonable(data), sort_keys=True, allow_nan=False))
        return
    print(text)


def score_summary(results_path: str, paths: dict[str, str]) -> dict[str, Any]:
    """The fields of a score people script against, read back from the results.json just written."""
    with open(results_path, encoding="utf-8") as handle:
        doc = json.load(handle)
    efficiency = doc.get("efficiency") or {}
    audit = doc.get("audit") or {}
    return {
        "kind": "robustprune.score.summary",
        "verdict": doc.get("verdict"),
        "clean_acc": doc["clean_acc"],
        "clean_acc_ci": doc["clean_acc_ci"],
        "robust_acc": doc["robust_acc"],
        "robust_acc_ci": doc["robust_acc_ci"],
        "autoattack_acc": doc.get("autoattack_acc"),
        "battery": doc["battery"],
        "norm": doc["norm"],
        "eps": doc["eps"],
        "n_examples": doc["n_examples"],
        "randomized": doc["randomized"],
        "sparsity": (doc.get("sparsity") or {}).get("sparsity"),
        "alerts": [a.get("message") for a in doc.get("alerts", [])],
        "audit_gap_upper_points": audit.get("gap_upper_points"),
        "speedup": efficiency.get("speedup"),
        "eps_curve": (
            {k: curve[k] for k in ("attack", "norm", "bound", "grid", "robust_acc", "median_distance")}
            if (curve := doc.get("eps_curve"))
            else None
        ),
        "eps_curve_skipped": doc.get("eps_curve_skipped"),
        "files": paths,
    }
