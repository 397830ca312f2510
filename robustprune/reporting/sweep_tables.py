"""The sweep report's tables: every cell, the means over seeds, the cost, and the summary rows; and their notes."""

from __future__ import annotations

from typing import Any

from robustprune.render.format import NA, Table, fmt_frac_pct, fmt_int, fmt_num, fmt_pct, fmt_seconds
from robustprune.reporting.sweep_verdicts import verdict_counts, verdict_text, worst_verdict
from robustprune.reporting.view import ACC_BOUNDS, CAL_BOUNDS, RECORD_METRICS, Point, SweepView, attack_metric, series


def _sparsity_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else NA


RECONSTRUCTION_MARK = " (reconstruction)"
RECONSTRUCTION_NOTE = (
    "rows marked (reconstruction) come from robustprune's reconstruction of a method whose paper text and code could "
    "not be read (Deadwooding, algorithms.md section 1): not the published algorithm, and not comparable with the "
    "paper's numbers"
)


def reconstructions(view: SweepView) -> list[str]:
    """The recipes (in report order) whose cells say their defense is a reconstruction."""
    marked = {c.recipe for c in view.cells if c.record.reconstruction}
    return [r for r in view.recipes if r in marked]


def _recipe_text(recipe: str, marked: list[str]) -> str:
    return recipe + RECONSTRUCTION_MARK if recipe in marked else recipe


def _achieved_text(records: list[Any]) -> str:
    """Achieved sparsity in the target's unit: the share of channels closed for structured recipes (their target is
    a share of channels), else of Conv/Linear weights; the mean when several seeds."""
    channels = [r.channel_sparsity for r in records if r.channel_sparsity is not None]
    if records and len(channels) == len(records):
        return f"{fmt_frac_pct(sum(channels) / len(channels))} of channels"
    weights = [r.achieved_sparsity for r in records if r.achieved_sparsity is not None]
    return fmt_frac_pct(sum(weights) / len(weights)) if weights else NA


def _has_heads(view: SweepView) -> bool:
    """Whether any cell is multi-head: then the tables add the worst single head's robust accuracy."""
    return any(c.record.worst_head_robust_acc is not None for c in view.cells)


def _has_bounds(view: SweepView) -> bool:
    """Whether any cell has the bracket: then the cells table adds certified and exact robust accuracy."""
    return any(c.record.certified_acc is not None for c in view.cells)


def cells_table(view: SweepView) -> Table:
    """Every stored number of every cell, one row per cell."""
    heads = _has_heads(view)
    bounds = _has_bounds(view)
    marked = reconstructions(view)
    headers = (
        "recipe",
        "target",
        "achieved",
        "seed",
        "clean %",
        *(f"after {lbl} %" for lbl in view.labels),
        "worst %",
        *(("worst head %",) if heads else ()),
        *(("certified %", "exact %") if bounds else ()),
        "verdict",
        "ECE clean",
        "ECE adv",
        "NLL clean",
        "NLL adv",
        "randomized",
        "key",
        "parent",
    )
    rows = []
    for c in view.cells:
        r = c.record
        rows.append(
            (
                _recipe_text(c.recipe, marked),
                _sparsity_text(r.sparsity),
                _achieved_text([r]),
                str(c.seed),
                fmt_pct(r.clean_acc),
                *(fmt_pct(r.attacks.get(lbl)) for lbl in view.labels),
                fmt_pct(r.robust_acc),
                *((fmt_pct(r.worst_head_robust_acc),) if heads else ()),
                *((fmt_pct(r.certified_acc), fmt_pct(r.exact_acc)) if bounds else ()),
                verdict_text(r.verdict),
                fmt_num(r.ece_clean),
                fmt_num(r.ece_adv),
                fmt_num(r.nll_clean),
                fmt_num(r.nll_adv),
                "yes" if r.randomized else "no",
                c.key,
                str(r.parent_key or "-"),
            )
        )
    return Table(headers, tuple(rows), "lrrrr" + "r" * (len(view.labels) + heads + 2 * bounds) + "rlrrrrlll")


def _mean_text(point: Point | None, digits: int = 2) -> str:
    if point is None:
        return NA
    text = f"{point.mean:.{digits}f}"
    if point.lo is not None and point.hi is not None:
        text += f" [{point.lo:.{digits}f}, {point.hi:.{digits}f}]"
    return text


def means_table(view: SweepView) -> Table:
    """Mean over seeds with the 95 % t interval (the numbers behind the curves)."""
    metrics = [
        ("clean %", RECORD_METRICS["clean_acc"], 2),
        *((f"after {lbl} %", attack_metric(lbl), 2) for lbl in view.labels),
        ("worst %", RECORD_METRICS["robust_acc"], 2),
        *((("worst head %", RECORD_METRICS["worst_head_robust_acc"], 2),) if _has_heads(view) else ()),
        ("ECE clean", RECORD_METRICS["ece_clean"], 4),
        ("ECE adv", RECORD_METRICS["ece_adv"], 4),
        ("NLL clean", RECORD_METRICS["nll_clean"], 4),
        ("NLL adv", RECORD_METRICS["nll_adv"], 4),
    ]
    rows = []
    marked = reconstructions(view)
    for recipe in view.recipes:
        cells = view.recipe_cells(recipe)
        per_metric = [
            {p.sparsity: p for p in series(cells, fn, ACC_BOUNDS if digits == 2 else CAL_BOUNDS)}
            for _, fn, digits in metrics
        ]
        for sparsity in sorted({c.sparsity for c in cells}):
            seeds = sorted({c.seed for c in cells if c.sparsity == sparsity})
            rows.append(
                (
                    _recipe_text(recipe, marked),
                    f"{sparsity:g}",
                    _achieved_text([c.record for c in cells if c.sparsity == sparsity]),
                    str(len(seeds)),
                    *(_mean_text(pm.get(sparsity), digits) for pm, (_, _, digits) in zip(per_metric, metrics)),
                    verdict_text(worst_verdict(c.record.verdict for c in cells if c.sparsity == sparsity)),
                )
            )
    headers = ("recipe", "target", "achieved (mean)", "seeds", *(m[0] for m in metrics), "verdict (worst seed)")
    return Table(headers, tuple(rows), "lrrr" + "r" * len(metrics) + "l")


def _ms(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else NA


def _speedup(value: Any) -> str:
    return f"x{value:.2f}" if isinstance(value, int | float) else NA


def _arrow(given: Any, compact: Any) -> str:
    return f"{fmt_int(given)} → {fmt_int(compact)}" if given is not None else NA


def efficiency_table(view: SweepView) -> Table:
    """What each cell's pruning buys (compaction, measured latency) and how active its units are."""
    marked = reconstructions(view)
    rows = [
        (
            _recipe_text(c.recipe, marked),
            _sparsity_text(c.record.sparsity),
            fmt_frac_pct(c.record.achieved_sparsity),
            fmt_frac_pct(c.record.channel_sparsity),
            str(c.seed),
            _arrow(c.record.params, c.record.compact_params),
            _arrow(c.record.macs, c.record.compact_macs),
            _ms(c.record.latency_ms),
            _ms(c.record.compact_latency_ms),
            _speedup(c.record.speedup),
            fmt_frac_pct(c.record.dead_relu_eval),
            fmt_frac_pct(c.record.dead_relu_train),
        )
        for c in view.cells
    ]
    headers = (
        "recipe",
        "target",
        "weights pruned",
        "channels closed",
        "seed",
        "params (as given → compacted)",
        "MACs (as given → compacted)",
        "latency ms",
        "compacted ms",
        "speed-up",
        "dead ReLU eval",
        "dead ReLU in training",
    )
    return Table(headers, tuple(rows), "lrrrrrrrrrrr")


def cost_table(view: SweepView) -> Table:
    rows = [
        (
            c.recipe,
            f"{c.sparsity:g}",
            str(c.seed),
            fmt_seconds(c.record.train_seconds),
            fmt_seconds(c.record.score_seconds),
            fmt_int(c.record.n_forward),
            fmt_int(c.record.n_backward),
            c.key,
        )
        for c in view.cells
    ]
    columns = [
        [c.record.train_seconds for c in view.cells],
        [c.record.score_seconds for c in view.cells],
        [c.record.n_forward for c in view.cells],
        [c.record.n_backward for c in view.cells],
    ]
    total = [sum(v for v in column if isinstance(v, int | float)) for column in columns]
    rows.append(
        ("total", "", "", fmt_seconds(total[0]), fmt_seconds(total[1]), fmt_int(total[2]), fmt_int(total[3]), "")
    )
    headers = ("recipe", "target", "seed", "train s", "score s", "forward passes", "backward passes", "key")
    return Table(headers, tuple(rows), "lrrrrrrl")


def _battery_text(view: SweepView) -> str:
    battery, spec = view.battery(), view.sweep.spec
    # the attacks that apply to the threat model's norm (a battery may list others)
    configured = [a.label for a in battery.active_attacks()] if battery is not None else []
    added = [lbl for lbl in view.labels if lbl not in configured]
    name = battery.name if battery is not None else spec.battery if spec is not None else NA
    text = f"{name}: {', '.join(configured or view.labels) or NA}"
    return text + (f" (randomized cells: {', '.join(added)} first, adaptive)" if configured and added else "")


def summary_rows(view: SweepView) -> list[tuple[str, str]]:
    spec = view.sweep.spec
    config = view.cells[0].record.config if view.cells else None
    dataset = config.dataset if config is not None and config.dataset else spec.dataset if spec is not None else NA
    fingerprints = sorted({str(c.record.config.data_fingerprint) for c in view.cells})
    marked = reconstructions(view)
    rows = [
        ("dataset", str(dataset)),
        ("examples", fmt_int(config.n if config is not None else None)),
        (
            "data fingerprint",
            ", ".join(fingerprints) + (" (DIFFERENT DATA IN ONE SWEEP)" if len(fingerprints) > 1 else ""),
        ),
        ("threat model", view.threat_text()),
        ("battery", _battery_text(view)),
        ("recipes", ", ".join(view.recipes)),
        ("target sparsities", ", ".join(f"{s:g}" for s in sorted({c.sparsity for c in view.cells}))),
        ("seeds", ", ".join(str(s) for s in sorted({c.seed for c in view.cells}))),
        (
            "cells",
            f"{len(view.cells)}"
            + (
                ""
                if view.sweep.complete
                else " (partial: the sweep's results.json is missing, read from the finished cells)"
            ),
        ),
        ("dense baseline recipe", view.parent_recipe),
        ("evaluation verdicts", verdict_counts(view)),
    ]
    if marked:
        rows.append(("reconstructions", f"{', '.join(marked)}: {RECONSTRUCTION_NOTE}"))
    return rows


NOTES = (
    "The x axis of every figure is the TARGET sparsity; the achieved sparsity of every cell is in the tables. "
    "Lines join the mean over seeds, small dots are single seeds, the band is a 95 % t interval of the mean over "
    "seeds, clipped to the metric's range; a point measured on one seed has error bars instead, the 95 % Wilson "
    "interval of its n examples (calibration points on one seed have no interval). Solid: robust accuracy; dashed: clean accuracy in "
    "the same colour. A recipe with only a dense cell is drawn as a horizontal reference line. Colours and markers "
    "are fixed per recipe name."
)
EFFICIENCY_NOTE = (
    "Per cell: the share of Conv/Linear weights pruned and, for structured recipes, of channels closed (their "
    "target is a share of channels); parameters and MACs per example of the model as given (dense kernels: its "
    "dense parent's cost) and of its compacted form (closed channels removed, outputs checked equal to 1e-5); the "
    "median forward latency of both, interleaved passes of one batch of 64 at the sweep's thread count on this "
    "machine, and their ratio. Unstructured sparsity closes no channel and buys no speed here. Dead ReLU: the share "
    "of ReLU outputs that are zero, in eval mode on the validation probe and in the train-mode passes of the last "
    "training epoch (the dynamic rate AP lowers); a closed channel's units are zero, so in structured cells these "
    "rates count the pruning itself."
)
COST_NOTE = (
    "Training and scoring wall-clock seconds and the attacks' forward / backward passes (in examples), per cell; "
    "a multi-head cell's per-head runs are included."
)
MEANS_NOTE = (
    "Mean [95 % t interval over seeds, clipped to the metric's range] per recipe and target sparsity; "
    "one seed gives the value alone. `worst head %` (multi-head cells only): the weakest single head alone, under "
    "the per-head battery named in the cell's report, which may be lighter than the sweep's battery."
)
COMPARISON_NOTE = (
    "Paired on the same examples (equal data fingerprints), from the per-sample tables: each cell against its parent "
    "and against the dense baseline of the same seed. Δ = cell - reference in percentage points; `lost` = examples "
    "the reference got right and the cell got wrong (robust: broken by some attack or misclassified clean), `gained` "
    "the reverse; p = exact two-sided McNemar test on those discordant examples. A randomized cell is also attacked "
    "adaptively (its status says so); that can only lower its worst case, so the comparison does not flatter it. A "
    "cell scored with fewer or different attacks than its reference is not compared."
)
