"""`render_html`: one self-contained HTML report (inline CSS, figures as base64 PNG data: URIs), same sections as
the Markdown report and built from the same `tables` rows."""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from robustprune.reporting import tables as t
from robustprune.reporting.figures import document_figures
from robustprune.reporting.markdown import ATTACKS_NOTE

TEMPLATE = "score.html.j2"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # Autoescape on for every template (".j2" is not in jinja2's default list): names and paths are user input.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_html(doc: dict[str, Any]) -> str:
    """The whole report as one HTML string; deterministic for a given document."""
    figures = {stem: base64.b64encode(data).decode("ascii") for stem, data in document_figures(doc, "png").items()}
    context = {
        "title": f"robustprune score: {doc.get('architecture')} on {doc.get('dataset')}",
        "alerts": t.alert_lines(doc),
        "summary": t.summary_rows(doc),
        "headline": t.headline_table(doc),
        "attacks_note": ATTACKS_NOTE.replace("`", ""),
        "attacks": t.attack_table(doc),
        "ci_text": f"{t.fmt_frac_pct(doc.get('ci_confidence'))} {doc.get('ci_method', '')}".strip(),
        "calibration": t.calibration_table(doc),
        "reliability": t.reliability_table(doc),
        "heads_note": t.MULTI_HEAD_NOTE,
        "heads": t.multi_head_rows(doc),
        "head_table": t.multi_head_table(doc),
        "sparsity": t.sparsity_rows(doc),
        "layers": t.layer_table(doc),
        "warnings": t.warnings_table(doc),
        "environment": t.provenance_rows(doc),
        "data": t.data_rows(doc),
        "checkpoint": t.checkpoint_rows(doc),
        "battery": t.battery_rows(doc),
        "battery_attacks": t.battery_table(doc),
        "figures": figures,
    }
    return _environment().get_template(TEMPLATE).render(context)
