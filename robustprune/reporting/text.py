"""`summary_table`: the compact fixed-width summary a `score` run prints to stdout."""

from __future__ import annotations

from typing import Any

from robustprune.reporting.tables import (
    Table,
    alert_lines,
    attack_table,
    calibration_table,
    fmt_pct,
    sparsity_rows,
    threat_text,
)

SUMMARY_ATTACK_COLUMNS = ("attack", "acc %", "CI", "attempted", "broken", "seconds", "forward", "backward", "notes")
SUMMARY_CALIBRATION_METRICS = ("examples", "ECE", "NLL", "Brier")


def format_fixed(table: Table, indent: str = "") -> list[str]:
    """Plain-text lines with every column padded to its widest cell (numbers right-aligned)."""
    widths = [max(len(c) for c in col) for col in zip(table.headers, *table.rows)]

    def line(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, table.align)]
        return (indent + "  ".join(parts)).rstrip()

    return [line(table.headers), indent + "  ".join("-" * w for w in widths), *(line(r) for r in table.rows)]


def summary_table(doc: dict[str, Any]) -> str:
    """Clean and per-attack cumulative accuracy with CIs and cost, worst case, calibration, sparsity, warnings."""
    n_warnings = len(doc.get("warnings") or [])
    seed = (doc.get("provenance") or {}).get("seed")
    alerts = [f"!! {line}" for line in alert_lines(doc)]
    lines = [
        *alerts,
        *([""] if alerts else []),
        f"{doc.get('architecture')} on {doc.get('dataset')}: {threat_text(doc)}, battery {doc.get('battery')}, "
        + f"n = {doc.get('n_examples')}, seed {seed}",
        "",
        *format_fixed(attack_table(doc).select(SUMMARY_ATTACK_COLUMNS)),
        "",
    ]
    calibration = calibration_table(doc)
    keep = [r for r in calibration.rows if r[0] in SUMMARY_CALIBRATION_METRICS]
    lines += format_fixed(Table(calibration.headers, tuple(keep), calibration.align))
    mh = doc.get("multi_head")
    if mh:
        heads = (
            f"randomized, {mh.get('n_heads')} heads; each head alone ({mh.get('per_head_battery')} battery): "
            f"worst head robust {fmt_pct(mh.get('worst_head_robust_acc'))} %, "
            f"mean {fmt_pct(mh.get('mean_head_robust_acc'))} %"
        )
        lines += ["", heads]
    lines += [
        "",
        f"sparsity {sparsity_rows(doc)[0][1]} of Conv/Linear weights",
        f"warnings {n_warnings}"
        + (": " + ", ".join(sorted({str(w.get("check")) for w in doc["warnings"]})) if n_warnings else ""),
    ]
    return "\n".join(lines) + "\n"
