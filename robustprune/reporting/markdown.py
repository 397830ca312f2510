"""`render_markdown`: the default human report (diffable, renders in repositories), built from `tables`."""

from __future__ import annotations

from typing import Any

from robustprune.reporting import tables as t
from robustprune.reporting.tables import Table

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
    return md_table(t.kv_table(rows))


def render_markdown(doc: dict[str, Any]) -> str:
    """The whole report; deterministic (the same document always gives the same bytes)."""
    warnings = t.warnings_table(doc)
    layers = t.layer_table(doc)
    reliability = t.reliability_table(doc)
    sections = [
        f"# robustprune score: {md_escape(str(doc.get('architecture')))} on {md_escape(str(doc.get('dataset')))}",
        *[f"> **{md_escape(line)}**" for line in t.alert_lines(doc)],
        _kv(t.summary_rows(doc)),
        "## Headline",
        md_table(t.headline_table(doc)),
        "## Attacks",
        ATTACKS_NOTE,
        md_table(t.attack_table(doc)),
        "## Calibration",
        "Clean predictions against predictions under the worst-case attack (float64, from stored probabilities).",
        md_table(t.calibration_table(doc)),
    ]
    if reliability.rows:
        sections += ["### Reliability bins", md_table(reliability)]
    if doc.get("multi_head"):
        sections += ["## Heads", t.MULTI_HEAD_NOTE, _kv(t.multi_head_rows(doc)), md_table(t.multi_head_table(doc))]
    sections += ["## Sparsity", _kv(t.sparsity_rows(doc))]
    if layers.rows:
        sections += ["### Layers", md_table(layers)]
    sections += [
        "## Warnings",
        md_table(warnings) if warnings.rows else "None.",
        "## Provenance",
        "### Environment",
        _kv(t.provenance_rows(doc)),
        "### Data",
        _kv(t.data_rows(doc)),
        "### Checkpoint",
        _kv(t.checkpoint_rows(doc)),
        "### Battery (as resolved)",
        _kv(t.battery_rows(doc)),
        md_table(t.battery_table(doc)),
    ]
    return "\n\n".join(sections) + "\n"
