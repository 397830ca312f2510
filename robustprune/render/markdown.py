"""`render_markdown`: the default human report (diffable, renders in repositories), built from `tables`."""

from __future__ import annotations

from typing import Any

from robustprune.render import health as h
from robustprune.render import provenance as p
from robustprune.render import tables as t
from robustprune.render.bounds import BOUNDS_NOTE, bounds_rows
from robustprune.render.format import Table, kv_table
from robustprune.scoring.result import ScoreResult

ATTACKS_NOTE = (
    "Each attack runs only on the examples still unbroken, so every row is the accuracy after that attack and all "
    "before it; `worst case` is the per-example worst case over the battery. Cost: wall-clock seconds, forward and "
    "backward passes (in examples), and seconds per attempted example; `median norm` is the median perturbation "
    "norm of the examples the attack broke."
)


def md_escape(text: str) -> str:
    """Keep a cell on one line, inside its column, and inert: user strings (names, paths) may hold | or HTML."""
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def md_table(table: Table) -> str:
    header = [md_escape(h) for h in table.headers]
    rows = [[md_escape(c) for c in r] for r in table.rows]
    widths = [max(3, *(len(c) for c in col)) for col in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, table.align)]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join("-" * (w - 1) + ":" if a == "r" else "-" * w for w, a in zip(widths, table.align)) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _kv(rows: list[tuple[str, str]]) -> str:
    return md_table(kv_table(rows))


def _verdict_panel(result: ScoreResult) -> list[str]:
    """The verdict first, then why, every check and every escalation (nothing for a pre-verdict document)."""
    line = h.verdict_line(result)
    if line is None:
        return []
    panel = [f"## {md_escape(line)}"]
    reasons = h.verdict_reasons(result)
    if reasons:
        panel.append("\n".join(f"- {md_escape(r)}" for r in reasons))
    panel += [_kv(h.verdict_rows(result)), "### Health checks", md_table(h.checks_table(result))]
    escalations = h.escalations_table(result)
    panel += ["### Escalations", md_table(escalations) if escalations.rows else "None: no check called for one."]
    return panel


def render_markdown(result: ScoreResult | dict[str, Any]) -> str:
    """The whole report; deterministic (the same document always gives the same bytes)."""
    result = ScoreResult.coerce(result)
    warnings = t.warnings_table(result)
    layers = t.layer_table(result)
    reliability = t.reliability_table(result)
    sections = [
        f"# robustprune score: {md_escape(str(result.architecture))} on {md_escape(str(result.dataset))}",
        *_verdict_panel(result),
        *[f"> **{md_escape(line)}**" for line in t.alert_lines(result)],
        _kv(t.summary_rows(result)),
        "## Headline",
        md_table(t.headline_table(result)),
        "## Attacks",
        ATTACKS_NOTE,
        md_table(t.attack_table(result)),
        "## Calibration",
        "Clean predictions against predictions under the worst-case attack (float64, from stored probabilities).",
        md_table(t.calibration_table(result)),
    ]
    if reliability.rows:
        sections += ["### Reliability bins", md_table(reliability)]
    if result.bounds is not None:
        sections += ["## Certified and exact bounds", BOUNDS_NOTE, _kv(bounds_rows(result))]
    if result.eps_curve is not None or result.eps_curve_skipped:
        sections += [
            "## Robustness vs eps",
            t.EPS_CURVE_NOTE,
            *[f"**{md_escape(x)}**" for x in t.eps_curve_lines(result)],
        ]
        if result.eps_curve is not None:
            sections += [md_table(t.eps_curve_table(result)), md_table(t.eps_curve_runs_table(result))]
    if result.multi_head is not None:
        sections += [
            "## Heads",
            t.MULTI_HEAD_NOTE,
            _kv(t.multi_head_rows(result)),
            md_table(t.multi_head_table(result)),
        ]
    sections += ["## Sparsity", _kv(t.sparsity_rows(result))]
    if layers.rows:
        sections += ["### Layers", md_table(layers)]
    sections += [
        "## Warnings",
        md_table(warnings) if warnings.rows else "None.",
        "## Provenance",
        "### Environment",
        _kv(p.provenance_rows(result)),
        "### Data",
        _kv(p.data_rows(result)),
        "### Checkpoint",
        _kv(p.checkpoint_rows(result)),
        "### Battery (as resolved)",
        _kv(p.battery_rows(result)),
        md_table(p.battery_table(result)),
    ]
    return "\n\n".join(sections) + "\n"
