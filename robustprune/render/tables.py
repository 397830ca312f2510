"""Every table of a score report, built once from the typed result so Markdown, HTML and stdout never disagree."""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

from robustprune.metrics.accuracy import wilson_pct
from robustprune.render.format import (
    NA,
    Table,
    fmt_ci,
    fmt_eps,
    fmt_frac_pct,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_seconds,
    fmt_value,
    is_num,
    make_table,
)
from robustprune.scoring.result import AttackEntry, CalibrationMetric, ReliabilityBin, ScoreResult

CALIBRATION_METRICS = {
    "ece": "ECE",
    "ece_equal_mass": "ECE (equal mass)",
    "mce": "MCE",
    "classwise_ece": "Classwise ECE",
    "nll": "NLL",
    "brier": "Brier",
    "aurc": "AURC",
}

# ---------------------------------------------------------------- headline and attacks


def threat_text(result: ScoreResult) -> str:
    return f"{result.norm}, eps = {fmt_eps(result.norm, result.eps)}"


def summary_rows(result: ScoreResult) -> list[tuple[str, str]]:
    return [
        ("model", str(result.architecture)),
        ("dataset", f"{result.dataset} ({result.data.split} split)"),
        ("threat model", threat_text(result)),
        ("battery", str(result.battery)),
        ("examples", fmt_int(result.n_examples)),
        ("classes", fmt_int(result.num_classes)),
        ("seed", str(result.provenance.seed)),
        ("randomized model", f"{'yes' if result.randomized else 'no'}; evaluation passes: {result.n_eval_passes}"),
        ("confidence intervals", f"{result.ci_method}, {fmt_frac_pct(result.ci_confidence)}"),
    ]


def headline_table(result: ScoreResult) -> Table:
    rows = [("verdict", result.verdict, "")] if result.verdict is not None else []
    rows += [
        ("clean accuracy", fmt_pct(result.clean_acc) + " %", fmt_ci(result.clean_acc_ci)),
        ("robust accuracy (worst case)", fmt_pct(result.robust_acc) + " %", fmt_ci(result.robust_acc_ci)),
    ]
    if result.autoattack_acc is not None:
        rows.append(("AutoAttack accuracy", fmt_pct(result.autoattack_acc) + " %", fmt_ci(result.robust_acc_ci)))
    sparsity = result.sparsity.sparsity if result.sparsity is not None else None
    rows.append(("sparsity (Conv/Linear weights)", fmt_frac_pct(sparsity), ""))
    ece = (result.calibration.clean.ece.value, result.calibration.adversarial.ece.value)
    rows.append(("ECE clean / adversarial", " / ".join(fmt_num(v) for v in ece), ""))
    rows.append(("warnings", str(len(result.warnings)), ""))
    return make_table(("metric", "value", "CI"), rows, "lrl")


def _median_norm(result: ScoreResult, label: str) -> str:
    """Median perturbation norm over the examples this attack broke (from the per-sample table)."""
    median = result.per_sample.median_norm(label) if result.per_sample is not None else None
    return fmt_num(median) if median is not None else NA


ATTACK_HEADERS = (
    "step",
    "attack",
    "implementation",
    "library",
    "attempted",
    "broken",
    "acc %",
    "CI",
    "seconds",
    "s/attempted",
    "forward",
    "backward",
    "median norm",
    "notes",
)


def attack_table(result: ScoreResult) -> Table:
    """Accuracy after each step of the battery: clean first, then cumulatively after every attack, then totals."""
    blank = ("",) * 6
    rows = [
        (
            "0",
            "clean",
            "",
            "",
            fmt_int(result.n_examples),
            "",
            fmt_pct(result.clean_acc),
            fmt_ci(result.clean_acc_ci),
            *blank,
        )
    ]
    for i, a in enumerate(result.attacks, start=1):
        per_example = a.seconds / a.n_attempted if a.n_attempted else None
        library = " ".join(str(v) for v in (a.library, a.library_version) if v)
        rows.append(
            (
                str(i),
                str(a.label),
                str(a.implementation or NA),
                library or NA,
                fmt_int(a.n_attempted),
                fmt_int(a.n_broken),
                fmt_pct(a.robust_acc),
                fmt_ci(a.robust_acc_ci),
                fmt_seconds(a.seconds),
                fmt_num(per_example),
                fmt_int(a.n_forward),
                fmt_int(a.n_backward),
                _median_norm(result, a.label),
                attack_notes(a),
            )
        )
    # Totals: every attack sees only the survivors of the ones before, so attempted/broken add up without overlap.
    attempted = sum(a.n_attempted for a in result.attacks)
    seconds = result.cost.seconds
    rows.append(
        (
            "",
            "worst case",
            "",
            "",
            fmt_int(attempted),
            fmt_int(sum(a.n_broken for a in result.attacks)),
            fmt_pct(result.robust_acc),
            fmt_ci(result.robust_acc_ci),
            fmt_seconds(seconds),
            fmt_num(seconds / attempted) if is_num(seconds) and attempted else NA,
            fmt_int(result.cost.n_forward),
            fmt_int(result.cost.n_backward),
            "",
            "",
        )
    )
    return make_table(ATTACK_HEADERS, rows, "rlllrrrlrrrrrl")


def attack_series(result: ScoreResult) -> list[tuple[str, float | None, list[float] | None]]:
    """(step label, accuracy %, CI) for the figure: clean, then after each attack."""
    series = [("clean", result.clean_acc, result.clean_acc_ci)]
    series += [(a.label, a.robust_acc, a.robust_acc_ci) for a in result.attacks]
    return series


# ---------------------------------------------------------------- heads


MULTI_HEAD_NOTE = (
    "A randomized multi-head (DIO) model: the headline numbers score its random-head mode (every verdict over "
    "repeated passes, the adaptive all-heads attack first). Below, each head alone (fixed mode) under the "
    "per-head battery; a deployment that pins one head gets that head's numbers, and the worst head bounds them all. "
    "The official protocol (attack_dio.py: one PGD crafted through the random-head forward, then every head "
    "re-classifies) is weaker and shown for comparison with the paper only."
)


def multi_head_rows(result: ScoreResult) -> list[tuple[str, str]]:
    """Summary of the per-head report; [] for an ordinary model."""
    mh = result.multi_head
    if mh is None:
        return []
    adaptive = mh.adaptive_attack
    settings = ", ".join(f"{k}={v}" for k, v in sorted(adaptive.items()) if k not in ("name", "label"))
    return [
        ("heads", fmt_int(mh.n_heads)),
        ("scored mode", f"{mh.scored_mode} (handed over in {mh.original_mode} mode)"),
        ("adaptive attack", f"{adaptive.get('label', adaptive.get('name'))} ({settings})"),
        ("per-head battery", str(mh.per_head_battery)),
        ("worst head: clean / robust %", f"{fmt_pct(mh.worst_head_clean_acc)} / {fmt_pct(mh.worst_head_robust_acc)}"),
        ("mean head: clean / robust %", f"{fmt_pct(mh.mean_head_clean_acc)} / {fmt_pct(mh.mean_head_robust_acc)}"),
        *official_protocol_rows(result),
    ]


def official_protocol_rows(result: ScoreResult) -> list[tuple[str, str]]:
    """DIO's official protocol (attack_dio.py), apart from the adaptive numbers; [] when it was not run."""
    official = result.multi_head.official_protocol if result.multi_head is not None else None
    if official is None:
        return []
    attack = official.attack
    return [
        (
            "official protocol (attack_dio.py): mean / std / worst head robust %",
            (
                f"{fmt_pct(official.mean_head_robust_acc)} / {fmt_pct(official.std_head_robust_acc)} / "
                f"{fmt_pct(official.worst_head_robust_acc)} over {fmt_int(official.n_heads)} heads "
                f"(PGD-{attack.get('steps')}, step {attack.get('rel_step')} eps, random start)"
            ),
        ),
        ("official protocol: what it is", official.note),
    ]


def multi_head_table(result: ScoreResult) -> Table:
    """Clean and robust accuracy of every head alone; empty for an ordinary model."""
    mh = result.multi_head
    clean, robust = (mh.per_head_clean_acc, mh.per_head_robust_acc) if mh is not None else ([], [])
    worst = mh.worst_head_robust_acc if mh is not None else None
    official = mh.official_protocol if mh is not None else None
    if official is None:
        rows = [
            (str(i), fmt_pct(c), fmt_pct(r), "worst" if r == worst else "")
            for i, (c, r) in enumerate(zip(clean, robust, strict=True))
        ]
        return make_table(("head", "clean %", "robust %", ""), rows, "rrrl")
    rows = [
        (str(i), fmt_pct(c), fmt_pct(r), "worst" if r == worst else "", fmt_pct(o))
        for i, (c, r, o) in enumerate(zip(clean, robust, official.per_head_robust_acc, strict=True))
    ]
    return make_table(("head", "clean %", "robust %", "", "official protocol %"), rows, "rrrlr")


# ---------------------------------------------------------------- calibration


def _binning_text(metric: CalibrationMetric) -> str:
    """Everything stored beside a number except the number: binning and bin count first, the rest sorted."""
    stored = metric.to_json()
    parts = []
    if "binning" in stored:
        parts.append(str(stored["binning"]) + (f", {stored['n_bins']} bins" if "n_bins" in stored else ""))
    parts += [f"{k}={fmt_value(stored[k])}" for k in sorted(stored) if k not in ("value", "binning", "n_bins")]
    return "; ".join(parts) or "-"


def calibration_table(result: ScoreResult) -> Table:
    clean, adv = result.calibration.clean, result.calibration.adversarial
    rows = [("examples", "-", fmt_int(clean.n), fmt_int(adv.n))]
    for key, name in CALIBRATION_METRICS.items():
        c, a = clean.metric(key), adv.metric(key)
        binning = _binning_text(c)
        if _binning_text(a) != binning:
            binning = f"clean: {binning}; adversarial: {_binning_text(a)}"
        rows.append((name, binning, fmt_num(c.value), fmt_num(a.value)))
    return make_table(("metric", "binning", "clean", "adversarial"), rows, "llrr")


def reliability_bins(result: ScoreResult, side: str) -> list[ReliabilityBin]:
    summary = result.calibration.clean if side == "clean" else result.calibration.adversarial
    return summary.reliability.bins


def reliability_table(result: ScoreResult) -> Table:
    rows = []
    bins = zip_longest(reliability_bins(result, "clean"), reliability_bins(result, "adversarial"))
    for i, (c, a) in enumerate(bins):
        edges = c or a
        rows.append(
            (
                str(i + 1),
                f"{'[' if i == 0 else '('}{edges.lo:.3f}, {edges.hi:.3f}]",  # bin 0 is closed at 0
                *(
                    cell
                    for b in (c, a)
                    for cell in (
                        (fmt_int(b.count), fmt_num(b.accuracy), fmt_num(b.confidence), fmt_num(b.gap))
                        if b is not None
                        else (NA, NA, NA, NA)
                    )
                ),
            )
        )
    headers = (
        "bin",
        "confidence range",
        "clean n",
        "clean acc",
        "clean conf",
        "clean gap",
        "adv n",
        "adv acc",
        "adv conf",
        "adv gap",
    )
    return make_table(headers, rows, "rl" + "r" * 8)


# ---------------------------------------------------------------- sparsity


def _share(sparsity: object, nonzero: object, total: object) -> str:
    return f"{fmt_frac_pct(sparsity)} ({fmt_int(nonzero)} of {fmt_int(total)} nonzero)"


def sparsity_rows(result: ScoreResult) -> list[tuple[str, str]]:
    s = result.sparsity
    if s is None:
        return [
            ("sparsity (Conv/Linear weights)", _share(None, None, None)),
            ("sparsity (all parameters)", _share(None, None, None)),
            ("compression ratio", NA),
            ("MACs per example, dense", NA),
            ("MACs per example, effective", NA),
            *efficiency_rows(result),
        ]
    dense, effective = s.macs_dense, s.macs_effective
    reduction = f"{dense / effective:.2f}x" if is_num(dense) and is_num(effective) and effective else NA
    return [
        *_sparsity_core(s, dense, effective, reduction),
        *efficiency_rows(result),
    ]


def _latency_text(latency: Any) -> str:
    return (
        f"{latency.median_ms:.3f} ms median (p10-p90 {latency.p10_ms:.3f}-{latency.p90_ms:.3f}; batch "
        f"{latency.batch_size}, {latency.threads} thread{'s' * (latency.threads != 1)}, {latency.repeats} passes, "
        f"{latency.device})"
    )


def efficiency_rows(result: ScoreResult) -> list[tuple[str, str]]:
    """The compacted model against the model as given: params, MACs, measured latency and speed-up."""
    e = result.efficiency
    if e is None:
        return []
    if e.skipped:
        return [("compacted model", f"not measured: {e.skipped}")]
    rows = [
        (
            "channels removed by compaction",
            f"{e.channels_removed}" + (" (no closed channel)" if not e.channels_removed else ""),
        ),
        ("params, as given → compacted", f"{fmt_int(e.params)} → {fmt_int(e.compact_params)}"),
        ("MACs per example, as given → compacted", f"{fmt_int(e.macs)} → {fmt_int(e.compact_macs)}"),
    ]
    if e.latency is not None and e.compact_latency is not None:
        rows += [
            ("latency as given (dense kernels)", _latency_text(e.latency)),
            ("latency compacted", _latency_text(e.compact_latency)),
            ("measured speed-up", f"{e.speedup:.2f}x (outputs equal to {fmt_sci(e.max_abs_diff)})"),
        ]
    return rows


def fmt_sci(value: object) -> str:
    return f"{value:.1e}" if is_num(value) else NA


def _sparsity_core(s: Any, dense: Any, effective: Any, reduction: str) -> list[tuple[str, str]]:
    return [
        ("sparsity (Conv/Linear weights)", _share(s.sparsity, s.prunable_nonzero, s.prunable_params)),
        ("sparsity (all parameters)", _share(s.all_sparsity, s.all_nonzero, s.all_params)),
        ("compression ratio", f"{s.compression_ratio:.2f}x" if is_num(s.compression_ratio) else NA),
        ("MACs per example, dense", fmt_int(dense)),
        (
            "MACs per example, effective",
            fmt_int(effective) + (f" (dense / effective = {reduction})" if reduction != NA else ""),
        ),
    ]


def layer_table(result: ScoreResult) -> Table:
    layers = result.sparsity.layers if result.sparsity is not None else []
    rows = [
        (
            r.name,
            r.type,
            "x".join(str(d) for d in r.shape) or "-",
            fmt_int(r.numel),
            fmt_int(r.nonzero),
            fmt_frac_pct(r.sparsity),
            fmt_int(r.macs_dense),
            fmt_int(r.macs_effective),
        )
        for r in layers
    ]
    return make_table(
        ("layer", "type", "shape", "params", "nonzero", "sparsity", "MACs dense", "MACs effective"), rows, "lllrrrrr"
    )


# ---------------------------------------------------------------- warnings and provenance


def attack_notes(attack: AttackEntry) -> str:
    """Why an attack did not run, what it changed about itself for this model, and its own flags."""
    notes = [f"SKIPPED: {attack.skipped}"] if attack.skipped else []
    notes += [str(n) for n in attack.notes] + [str(f) for f in attack.flags]
    return "; ".join(notes) or "-"


def alert_lines(result: ScoreResult) -> list[str]:
    """The findings a reader must see before any number (e.g. gradient attacks that could not run)."""
    return [f"{a.check}: {a.message}" for a in result.alerts]


def warnings_table(result: ScoreResult) -> Table:
    return make_table(("check", "message"), [(w.check, w.message) for w in result.warnings], "ll")


# ---------------------------------------------------------------- robustness vs eps

EPS_CURVE_NOTE = (
    "Robust accuracy at each eps from one run of minimum-norm attacks merged with the battery's own verified points: "
    "UPPER BOUNDS from the named attacks (each point re-checked: inside [0, 1], misclassified, its distance measured "
    "on the point). At the battery's eps the curve is never above the headline, which stays the number to quote. "
    "Intervals: 95 % Wilson, from the number of examples."
)


def eps_curve_lines(result: ScoreResult) -> list[str]:
    """What to say above the curve: its skip reason (loud), its caveat, its median."""
    if result.eps_curve_skipped:
        return [f"NO EPS CURVE: {result.eps_curve_skipped}"]
    curve = result.eps_curve
    if curve is None:
        return []
    median = "none (most examples never broken)" if curve.median_distance is None else f"{curve.median_distance:.4g}"
    lines = [
        f"{curve.norm}, upper bounds from {curve.attack}, {curve.steps} steps; median minimal perturbation {median}"
        + (f"; judged over {curve.n_passes} passes (randomized model)" if curve.n_passes > 1 else "")
    ]
    if curve.certified_acc:
        lines.append("lower bounds: CROWN's certified robust accuracy at every eps (the truth lies between the curves)")
    elif curve.certified_skipped:
        lines.append(f"no lower curve: {curve.certified_skipped}")
    if curve.caveat:
        lines.append(f"CAUTION: {curve.caveat}")
    return lines


def eps_curve_table(result: ScoreResult) -> Table:
    """One row per eps of the grid: robust accuracy (an upper bound) and its Wilson interval."""
    curve = result.eps_curve
    rows = []
    lower = curve.certified_acc if curve is not None else None
    if curve is not None:
        for i, (eps, acc) in enumerate(zip(curve.grid, curve.robust_acc)):
            interval = wilson_pct(acc, curve.n_examples)
            ci = f"[{interval[0]:.1f}, {interval[1]:.1f}]" if interval is not None else NA
            rows.append((fmt_eps(curve.norm, eps), f"{acc:.1f}", ci, *((f"{lower[i]:.1f}",) if lower else ())))
    headers = (
        "eps",
        "robust accuracy % (upper bound)",
        "95 % Wilson",
        *(("certified % (lower bound)",) if lower else ()),
    )
    return Table(headers, tuple(rows), "lrr" + ("r" if lower else ""))


def eps_curve_runs_table(result: ScoreResult) -> Table:
    """Each attack's share of the curve."""
    curve = result.eps_curve
    rows = []
    for run in curve.runs if curve is not None else []:
        median = f"{run.median_distance:.4g}" if run.median_distance is not None else NA
        rows.append(
            (
                run.attack,
                fmt_int(run.n_found),
                fmt_int(run.rejected),
                median,
                fmt_int(run.closest),
                fmt_seconds(run.seconds),
            )
        )
    headers = ("attack", "examples broken", "points rejected", "median distance", "closest on", "time")
    return Table(headers, tuple(rows), "lrrrrr")
