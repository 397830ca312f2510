"""`render_html`: one self-contained HTML report (inline CSS, figures as base64 PNG data: URIs), same sections as
the Markdown report and built from the same `tables` rows."""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from robustprune.render import health as h
from robustprune.render import provenance as p
from robustprune.render import tables as t
from robustprune.render.bounds import BOUNDS_NOTE, bounds_rows
from robustprune.render.figures import document_figures
from robustprune.render.format import fmt_frac_pct
from robustprune.render.markdown import ATTACKS_NOTE
from robustprune.scoring.result import ScoreResult

TEMPLATE = "score.html.j2"


TEMPLATES = Path(__file__).with_name("templates")


@lru_cache(maxsize=4)
def jinja_environment(templates: Path = TEMPLATES) -> jinja2.Environment:
    # Autoescape on for every template (".j2" is not in jinja2's default list): names and paths are user input.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_html(result: ScoreResult | dict[str, Any]) -> str:
    """The whole report as one HTML string; deterministic for a given document."""
    result = ScoreResult.coerce(result)
    figures = {stem: base64.b64encode(data).decode("ascii") for stem, data in document_figures(result, "png").items()}
    context = {
        "title": f"robustprune score: {result.architecture} on {result.dataset}",
        "verdict": result.verdict,
        "verdict_line": h.verdict_line(result),
        "verdict_reasons": h.verdict_reasons(result),
        "verdict_rows": h.verdict_rows(result),
        "checks": h.checks_table(result),
        "escalations": h.escalations_table(result),
        "alerts": t.alert_lines(result),
        "summary": t.summary_rows(result),
        "headline": t.headline_table(result),
        "attacks_note": ATTACKS_NOTE.replace("`", ""),
        "attacks": t.attack_table(result),
        "ci_text": f"{fmt_frac_pct(result.ci_confidence)} {result.ci_method}".strip(),
        "calibration": t.calibration_table(result),
        "reliability": t.reliability_table(result),
        "heads_note": t.MULTI_HEAD_NOTE,
        "heads": t.multi_head_rows(result),
        "head_table": t.multi_head_table(result),
        "sparsity": t.sparsity_rows(result),
        "layers": t.layer_table(result),
        "warnings": t.warnings_table(result),
        "environment": p.provenance_rows(result),
        "data": p.data_rows(result),
        "checkpoint": p.checkpoint_rows(result),
        "battery": p.battery_rows(result),
        "battery_attacks": p.battery_table(result),
        "figures": figures,
        "eps_note": t.EPS_CURVE_NOTE,
        "eps_lines": t.eps_curve_lines(result),
        "eps_curve": t.eps_curve_table(result),
        "eps_runs": t.eps_curve_runs_table(result),
        "bounds_note": BOUNDS_NOTE,
        "bounds": bounds_rows(result),
    }
    return jinja_environment().get_template(TEMPLATE).render(context)
