"""How one score result looks: Markdown (default), self-contained HTML, a stdout summary, and matplotlib figures.

All three text forms are built from the same rows (`tables`), so they never disagree. The renderers load on first
use: `check` and the pytest plugin read the plain-text helpers here without importing jinja2 or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_RENDERERS = {
    "render_html": "robustprune.render.html",
    "render_markdown": "robustprune.render.markdown",
    "summary_table": "robustprune.render.text",
}

__all__ = ["render_html", "render_markdown", "summary_table"]


def __getattr__(name: str) -> Any:
    if name in _RENDERERS:
        return getattr(importlib.import_module(_RENDERERS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
