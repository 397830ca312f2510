"""The robustness-vs-sparsity report of a sweep: Markdown, self-contained HTML, PNG + SVG figures, comparisons.json.

Built ONLY from stored files (the sweep's results.json or its cells' cell.json, and each cell's score/results.json
with the per-sample table); nothing is retrained, rescored or attacked again. The same stored files always give the
same Markdown bytes, tables and comparisons.json (figures are pinned too, see `render.figures.render_figure`).

Conventions (research/ecosystem.md section 3): x = TARGET sparsity (achieved sparsity is in the tables); one line
per recipe with a colour and marker fixed per recipe name across every figure; clean accuracy dashed in the same
colour; markers at the measured points; mean over seeds with a 95 % t band (none with one seed).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from robustprune.atomic import write_bytes, write_json, write_text
from robustprune.jsonio import to_jsonable
from robustprune.paths import COMPARISONS_FILE, FIGURES_DIR, REPORT_HTML, REPORT_MARKDOWN
from robustprune.render.figures import Format
from robustprune.render.format import Table
from robustprune.render.html import jinja_environment
from robustprune.render.markdown import md_escape, md_table
from robustprune.reporting.comparisons import PairedComparison, comparisons_table, paired_comparisons
from robustprune.reporting.sweep_bounds import bracket_figure_specs
from robustprune.reporting.sweep_eps_curves import EPS_CURVE_NOTE, eps_curve_heading, eps_curve_table, eps_figure_specs
from robustprune.reporting.sweep_figures import FigureSpec, figure_specs
from robustprune.reporting.sweep_tables import (
    COMPARISON_NOTE,
    COST_NOTE,
    EFFICIENCY_NOTE,
    MEANS_NOTE,
    NOTES,
    cells_table,
    cost_table,
    efficiency_table,
    means_table,
    summary_rows,
)
from robustprune.reporting.sweep_verdicts import verdict_counts, verdict_note, verdict_panel, verdict_reasons
from robustprune.reporting.view import SweepView, make_view
from robustprune.results.store import load_sweep

FORMATS: tuple[Format, ...] = ("png", "svg")
TEMPLATES = Path(__file__).with_name("templates")
TEMPLATE = "sweep.html.j2"


@dataclass
class SweepReport:
    view: SweepView
    figures: list[FigureSpec]
    comparisons: list[PairedComparison]

    def tables(self) -> dict[str, Table]:
        return {
            "cells": cells_table(self.view),
            "means": means_table(self.view),
            "cost": cost_table(self.view),
            "efficiency": efficiency_table(self.view),
            "comparisons": comparisons_table(self.comparisons),
            "verdicts": verdict_panel(self.view),
        }


def _title(view: SweepView) -> str:
    dataset = view.sweep.spec.dataset if view.sweep.spec is not None else "data"
    return f"robustprune sweep: robustness vs sparsity on {dataset} ({view.threat_text()})"


def render_sweep_markdown(report: SweepReport) -> str:
    t = report.tables()
    sections = [
        f"# {md_escape(_title(report.view))}",
        md_table(Table(("field", "value"), tuple(summary_rows(report.view)), "ll")),
        f"## Evaluation verdict: {md_escape(verdict_counts(report.view))}",
        md_escape(verdict_note(report.view)),
        md_table(t["verdicts"]),
        *_reasons_markdown(report.view),
        "## Robust accuracy vs sparsity",
        NOTES,
    ]
    sections += _figures_markdown(report, "robustness")
    if calibration := _figures_markdown(report, "calibration"):
        sections += ["## Calibration vs sparsity", *calibration]
    if reliability := _figures_markdown(report, "reliability"):
        sections += ["## Reliability diagrams", *reliability]
    sections += [
        "## Mean over seeds",
        MEANS_NOTE,
        md_table(t["means"]),
        "## Paired comparisons",
        COMPARISON_NOTE,
        md_table(t["comparisons"])
        if t["comparisons"].rows
        else "No cell has a parent or a dense baseline in this sweep.",
        "## Every cell",
        "One row per cell, every stored number (accuracies in %).",
        md_table(t["cells"]),
        *_eps_curve_markdown(report),
        "## Speed-up and activity vs sparsity",
        EFFICIENCY_NOTE,
        md_table(t["efficiency"]),
        "## Cost",
        COST_NOTE,
        md_table(t["cost"]),
    ]
    return "\n\n".join(sections) + "\n"


def _figures_markdown(report: SweepReport, section: str) -> list[str]:
    out = []
    for fig in report.figures:
        if fig.section == section:
            out += [f"![{md_escape(fig.caption)}]({FIGURES_DIR}/{fig.stem}.png)", md_escape(fig.caption)]
    return out


def _eps_curve_markdown(report: SweepReport) -> list[str]:
    table = eps_curve_table(report.view)
    if table is None:
        return []
    return [
        f"## {eps_curve_heading(report.view)}",
        EPS_CURVE_NOTE,
        *_figures_markdown(report, "eps_curve"),
        md_table(table),
    ]


def _reasons_markdown(view: SweepView) -> list[str]:
    flagged = verdict_reasons(view)
    if not flagged:
        return []
    lines = [
        f"- **{md_escape(label)}: {verdict.upper()}**: " + md_escape("; ".join(reasons))
        for label, verdict, reasons in flagged
    ]
    return ["Why cells are not trusted:", "\n".join(lines)]


def render_sweep_html(report: SweepReport, pngs: dict[str, bytes]) -> str:
    figures = [
        {
            "stem": f.stem,
            "caption": f.caption,
            "data": base64.b64encode(pngs[f.stem]).decode("ascii"),
            "section": f.section,
        }
        for f in report.figures
    ]
    context = {
        "title": _title(report.view),
        "summary": summary_rows(report.view),
        "notes": NOTES,
        "comparison_note": COMPARISON_NOTE.replace("`", ""),
        "cost_note": COST_NOTE,
        "efficiency_note": EFFICIENCY_NOTE,
        "eps_curve": eps_curve_table(report.view),
        "eps_curve_heading": eps_curve_heading(report.view),
        "eps_curve_note": EPS_CURVE_NOTE,
        "means_note": MEANS_NOTE,
        "verdict_counts": verdict_counts(report.view),
        "verdict_note": verdict_note(report.view),
        "verdict_reasons": verdict_reasons(report.view),
        "figures": figures,
        **report.tables(),
    }
    return jinja_environment(TEMPLATES).get_template(TEMPLATE).render(context)


def prepare_report(sweep_dir: str | Path, *, reliability: Sequence[str] | None = None) -> SweepReport:
    view = make_view(load_sweep(sweep_dir))
    specs = [*figure_specs(view, reliability), *bracket_figure_specs(view), *eps_figure_specs(view)]
    return SweepReport(view, specs, paired_comparisons(view))


def build_sweep_report(
    sweep_dir: str | Path, *, reliability: Sequence[str] | None = None, formats: tuple[Format, ...] = FORMATS
) -> dict[str, str]:
    """Write report.md, report.html, comparisons.json and figures/<stem>.{png,svg} into the sweep directory.

    Reads only stored files (never trains, scores or attacks). `reliability` names the cell keys that get a
    reliability diagram (default: per recipe, its highest-sparsity cell of the first seed). Every write is atomic;
    figures of an earlier build that this build no longer draws are removed. Returns {name: path written}.
    """
    report = prepare_report(sweep_dir, reliability=reliability)
    root = report.view.sweep.root
    figures_dir = root / FIGURES_DIR
    paths: dict[str, str] = {}
    pngs: dict[str, bytes] = {}
    for fig in report.figures:
        for fmt in dict.fromkeys(("png", *formats)):  # the PNG is always drawn: the HTML embeds it
            data = fig.draw(fmt)
            if fmt == "png":
                pngs[fig.stem] = data
            if fmt in formats:
                paths[f"{FIGURES_DIR}/{fig.stem}.{fmt}"] = str(write_bytes(figures_dir / f"{fig.stem}.{fmt}", data))
    for stale in sorted(figures_dir.glob("*")):
        if stale.suffix in (".png", ".svg") and f"{FIGURES_DIR}/{stale.name}" not in paths:
            stale.unlink()
    paths["comparisons"] = str(
        write_json(
            root / COMPARISONS_FILE,
            to_jsonable(
                {
                    "schema_version": "1.0",
                    "kind": "sweep_comparisons",
                    "test": "mcnemar-exact (two-sided)",
                    "comparisons": [c.to_json() for c in report.comparisons],
                }
            ),
        )
    )
    paths["markdown"] = str(write_text(root / REPORT_MARKDOWN, render_sweep_markdown(report)))
    paths["html"] = str(write_text(root / REPORT_HTML, render_sweep_html(report, pngs)))
    return paths
