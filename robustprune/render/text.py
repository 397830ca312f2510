"""`summary_table`: the compact fixed-width summary a `score` run prints to stdout."""

from __future__ import annotations

from typing import Any

from robustprune.render.bounds import bracket_line
from robustprune.render.format import Table, fmt_pct
from robustprune.render.health import audit_line, escalation_lines, verdict_line
from robustprune.render.tables import alert_lines, attack_table, calibration_table, sparsity_rows, threat_text
from robustprune.scoring.result import ScoreResult

SUMMARY_ATTACK_COLUMNS = ("attack", "acc %", "CI", "attempted", "broken", "seconds", "forward", "backward", "notes")
SUMMARY_CALIBRATION_METRICS = ("examples", "ECE", "NLL", "Brier")


def format_fixed(table: Table, indent: str = "") -> list[str]:
    """Plain-text lines with every column padded to its widest cell (numbers right-aligned)."""
    widths = [max(len(c) for c in col) for col in zip(table.headers, *table.rows)]

    def line(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, table.align)]
        return (indent + "  ".join(parts)).rstrip()

    return [line(table.headers), indent + "  ".join("-" * w for w in widths), *(line(r) for r in table.rows)]


def _reconstruction_line(result: ScoreResult) -> list[str]:
    """One line when the checkpoint's train manifest says its defense is a reconstruction (Deadwooding)."""
    checkpoint = result.provenance.checkpoint
    manifest = (checkpoint.manifest if checkpoint is not None else None) or {}
    if manifest.get("reconstruction") is not True:
        return []
    return [
        (
            f"defense {manifest.get('defense', '?')} is a RECONSTRUCTION (train manifest): not the published method, "
            "whose paper text and code could not be read"
        )
    ]


def summary_table(result: ScoreResult | dict[str, Any]) -> str:
    """Clean and per-attack cumulative accuracy with CIs and cost, worst case, calibration, sparsity, warnings."""
    result = ScoreResult.coerce(result)
    n_warnings = len(result.warnings)
    alerts = [f"!! {line}" for line in alert_lines(result)]
    verdict = verdict_line(result)
    failing = [c for c in result.health.checks if c.status in ("warn", "fail", "error")] if result.health else []
    # The bracket leads (the truth lies in it), except under an untrusted verdict, which must be read first.
    bracket = [line for line in (bracket_line(result),) if line]
    untrusted = result.verdict == "untrusted"
    lines = [
        *([] if untrusted else bracket),
        *([verdict] if verdict else []),
        *(bracket if untrusted else []),
        *(f"   {c.id} {c.status.upper()}{' (resolved)' if c.resolved_by else ''}: {c.message}" for c in failing),
        *(f"   escalated: {e}" for e in escalation_lines(result)),
        *([f"   {audit_line(result)}"] if result.audit is not None else []),
        *([""] if verdict else []),
        *alerts,
        *([""] if alerts else []),
        f"{result.architecture} on {result.dataset}: {threat_text(result)}, battery {result.battery}, "
        + f"n = {result.n_examples}, seed {result.provenance.seed}",
        *_reconstruction_line(result),
        "",
        *format_fixed(attack_table(result).select(SUMMARY_ATTACK_COLUMNS)),
        "",
    ]
    calibration = calibration_table(result)
    keep = [r for r in calibration.rows if r[0] in SUMMARY_CALIBRATION_METRICS]
    lines += format_fixed(Table(calibration.headers, tuple(keep), calibration.align))
    mh = result.multi_head
    if mh is not None:
        heads = (
            f"randomized, {mh.n_heads} heads; each head alone ({mh.per_head_battery} battery): "
            f"worst head robust {fmt_pct(mh.worst_head_robust_acc)} %, "
            f"mean {fmt_pct(mh.mean_head_robust_acc)} %"
        )
        lines += ["", heads]
        official = mh.official_protocol
        if official is not None:
            lines.append(
                f"official protocol (attack_dio.py, for comparison with the paper only): mean "
                f"{fmt_pct(official.mean_head_robust_acc)} +- {fmt_pct(official.std_head_robust_acc)} % over heads"
            )
    lines += [
        "",
        f"sparsity {sparsity_rows(result)[0][1]} of Conv/Linear weights",
        *([result.efficiency.line()] if result.efficiency is not None else []),
        *([result.eps_curve.line()] if result.eps_curve is not None else []),
        *([f"NO EPS CURVE: {result.eps_curve_skipped}"] if result.eps_curve_skipped else []),
        f"warnings {n_warnings}" + (": " + ", ".join(sorted({w.check for w in result.warnings})) if n_warnings else ""),
    ]
    return "\n".join(lines) + "\n"
