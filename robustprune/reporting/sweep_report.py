"""The robustness-vs-sparsity report of a sweep: Markdown, self-contained HTML, PNG + SVG figures, comparisons.json.

Built ONLY from stored files (the sweep's results.json or its cells' cell.json, and each cell's score/results.json
with the per-sample table); nothing is retrained, rescored or attacked again. The same stored files always give the
same Markdown bytes, tables and comparisons.json (figures are pinned too, see `figures._render`).

Conventions (research/ecosystem.md section 3): x = TARGET sparsity (achieved sparsity is in the tables); one line
per recipe with a colour and marker fixed per recipe name across every figure; clean accuracy dashed in the same
colour; markers at the measured points; mean over seeds with a 95 % t band (none with one seed).
"""

from __future__ import annotations

import base64
import colorsys
import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from robustprune.atomic import write_bytes, write_json, write_text
from robustprune.errors import UsageError
from robustprune.metrics.paired import mcnemar_test
from robustprune.metrics.seeds import Bounds, mean_band
from robustprune.regression import WORST, added_attacks, correct_vectors, incomparable_reason
from robustprune.reporting.figures import Format, _render, reliability_figure
from robustprune.reporting.markdown import md_escape, md_table
from robustprune.reporting.tables import (
    NA,
    Table,
    fmt_eps,
    fmt_frac_pct,
    fmt_int,
    fmt_num,
    fmt_p,
    fmt_pct,
    fmt_seconds,
)
from robustprune.sweepdata import StoredCell, StoredSweep, load_sweep

FIGURES_DIR = "figures"
FORMATS: tuple[Format, ...] = ("png", "svg")
TEMPLATE = "sweep.html.j2"
CONFIDENCE = 0.95

# Fixed per recipe NAME (never by plotting order), so a recipe looks the same in every figure and every report.
# Families share a hue (magnitude: blues, adversarial training: reds, DIO: purples); markers tell them apart.
RECIPE_STYLES: dict[str, tuple[str, str]] = {
    "dense": ("#000000", "o"),
    "magnitude": ("#1f77b4", "s"),
    "magnitude_iterative": ("#6baed6", "D"),
    "magnitude_agp": ("#17becf", "v"),
    "magnitude_one_cycle": ("#393b79", "^"),
    "scratch": ("#7f7f7f", "P"),
    "pgd_at": ("#d62728", "^"),
    "pgd_at_agp": ("#ff9896", "v"),
    "trades": ("#ff7f0e", "X"),
    "fgsm_rs": ("#8c564b", "<"),
    "deadwooding": ("#2ca02c", ">"),
    "dio": ("#9467bd", "h"),
    "dio_at": ("#c5b0d5", "H"),
}
_HASH_MARKERS = ("o", "s", "D", "^", "v", "<", ">", "P", "X", "h", "*", "p")


def recipe_style(recipe: str) -> tuple[str, str]:
    """(colour, marker) of a recipe: the fixed table, else derived from a stable hash of the name."""
    if recipe in RECIPE_STYLES:
        return RECIPE_STYLES[recipe]
    digest = hashlib.sha256(recipe.encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.70, 0.80)
    color = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
    return color, _HASH_MARKERS[digest[2] % len(_HASH_MARKERS)]


# ---------------------------------------------------------------- statistics over seeds


ACC_BOUNDS: Bounds = (0.0, 100.0)
CAL_BOUNDS: Bounds = (0.0, None)


@dataclass(frozen=True)
class Point:
    sparsity: float  # target
    values: tuple[float, ...]  # one per seed that has the metric
    mean: float
    lo: float | None
    hi: float | None


def series(
    cells: Sequence[StoredCell], metric: Callable[[StoredCell], float | None], bounds: Bounds = (None, None)
) -> list[Point]:
    """The metric per target sparsity of one recipe's cells: seed values, mean and band, sorted by sparsity."""
    groups: dict[float, list[float]] = {}
    for cell in cells:
        value = metric(cell)
        if isinstance(value, int | float) and math.isfinite(value):
            groups.setdefault(cell.sparsity, []).append(float(value))
    return [Point(s, tuple(v), *mean_band(v, bounds=bounds)) for s, v in sorted(groups.items())]


def _record_metric(name: str) -> Callable[[StoredCell], float | None]:
    return lambda cell: cell.record.get(name)


def _attack_metric(label: str) -> Callable[[StoredCell], float | None]:
    return lambda cell: (cell.record.get("attacks") or {}).get(label)


# ---------------------------------------------------------------- the sweep, as the report sees it


@dataclass
class SweepView:
    sweep: StoredSweep
    recipes: list[str]  # spec order first, then any others by name
    labels: list[str]  # attack labels in battery order
    parent_recipe: str

    @property
    def cells(self) -> list[StoredCell]:
        return self.sweep.cells

    def recipe_cells(self, recipe: str) -> list[StoredCell]:
        return [c for c in self.cells if c.recipe == recipe]

    def battery(self) -> dict[str, Any]:
        return next((c.config.get("battery") for c in self.cells if c.config.get("battery")), None) or {}

    def threat_text(self) -> str:
        threat = self.battery().get("threat") or {}
        norm = threat.get("norm") or self.sweep.spec.get("norm") or NA
        return f"{norm}, eps = {fmt_eps(norm, threat.get('eps', self.sweep.spec.get('eps')))}"


def _view(sweep: StoredSweep) -> SweepView:
    names = {c.recipe for c in sweep.cells}
    spec_order = [r for r in [*(sweep.spec.get("recipes") or []), sweep.spec.get("parent_recipe")] if r in names]
    recipes = list(dict.fromkeys([*spec_order, *sorted(names)]))
    # Battery order from the resolved battery; cell.json / results.json store the attacks dict with sorted keys.
    present = {label for c in sweep.cells for label in (c.record.get("attacks") or {})}
    battery_labels: list[str] = []
    for cell in sweep.cells:
        battery_labels += [str(a.get("label")) for a in (cell.config.get("battery") or {}).get("attacks") or []]
    labels = [lbl for lbl in dict.fromkeys(battery_labels) if lbl in present]
    # Attacks outside the configured battery are the adaptive ones scoring adds for a randomized model, and it
    # runs them first: so they come first, and "after X" columns stay cumulative in each cell's own order.
    labels = sorted(present - set(labels)) + labels
    return SweepView(sweep, recipes, labels, str(sweep.spec.get("parent_recipe") or "dense"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# ---------------------------------------------------------------- figures


def _x(sparsity: float) -> float:
    return 100.0 * sparsity


def _draw_recipe(
    ax: Any, recipe: str, points: list[Point], *, dashed: list[Point] | None = None, band: bool = True
) -> None:
    """Mean line with markers, seed values as small dots, 95 % band; a dense-only recipe as a horizontal reference."""
    color, marker = recipe_style(recipe)
    only_dense = all(p.sparsity == 0 for p in points) and all(p.sparsity == 0 for p in dashed or [])
    style = {"color": color, "marker": marker, "markeredgecolor": "black", "markeredgewidth": 0.5}
    for pts, linestyle, width in ((points, "-", 1.6), (dashed or [], "--", 1.1)):
        if not pts:
            continue
        if only_dense:
            ax.axhline(pts[0].mean, color=color, linestyle=linestyle, linewidth=width * 0.8, alpha=0.8)
            ax.plot([0.0], [pts[0].mean], linestyle="none", markersize=6, **style)
        else:
            ax.plot(
                [_x(p.sparsity) for p in pts],
                [p.mean for p in pts],
                linestyle=linestyle,
                linewidth=width,
                markersize=6 if linestyle == "-" else 4,
                **style,
            )
        seeds = [(_x(p.sparsity), v) for p in pts if len(p.values) > 1 for v in p.values]
        if seeds:
            ax.plot(
                [s[0] for s in seeds],
                [s[1] for s in seeds],
                linestyle="none",
                marker=marker,
                markersize=2.5,
                color=color,
                alpha=0.45,
            )
    banded = [p for p in points if p.lo is not None and p.hi is not None]
    if band and banded:
        if only_dense:
            ax.axhspan(banded[0].lo, banded[0].hi, color=color, alpha=0.10, linewidth=0)
        elif len(banded) > 1:
            ax.fill_between(
                [_x(p.sparsity) for p in banded],
                [p.lo for p in banded],
                [p.hi for p in banded],
                color=color,
                alpha=0.15,
                linewidth=0,
            )
        else:
            p = banded[0]
            ax.errorbar([_x(p.sparsity)], [p.mean], yerr=[[p.mean - p.lo], [p.hi - p.mean]], color=color, capsize=3)


def _legend(ax: Any, recipes: list[str], extra: list[tuple[str, str]]) -> None:
    """One entry per recipe (colour + marker), then the line styles; "band" in `extra` adds a shaded patch."""
    handles: list[Any] = []
    for recipe in recipes:
        color, marker = recipe_style(recipe)
        handles.append(
            Line2D([], [], color=color, marker=marker, markeredgecolor="black", markeredgewidth=0.5, label=recipe)
        )
    handles += [
        Patch(facecolor="grey", alpha=0.25, label=text)
        if style == "band"
        else Line2D([], [], color="grey", linestyle=style, label=text)
        for style, text in extra
    ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)


def _sparsity_axis(ax: Any, label: bool = True) -> None:
    ax.set_xlim(-3, 103)
    if label:
        ax.set_xlabel("target sparsity (% of Conv/Linear weights)")
    ax.grid(True, linewidth=0.4, alpha=0.5)


def accuracy_figure(view: SweepView, label: str | None, fmt: Format) -> bytes:
    """Robust accuracy after attack `label` (cumulative; None: worst case) per recipe, clean accuracy dashed."""
    metric = _attack_metric(label) if label is not None else _record_metric("robust_acc")
    title = f"robust accuracy after {label} (cumulative)" if label is not None else "robust accuracy (worst case)"

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        for recipe in view.recipes:
            cells = view.recipe_cells(recipe)
            _draw_recipe(
                ax,
                recipe,
                series(cells, metric, ACC_BOUNDS),
                dashed=series(cells, _record_metric("clean_acc"), ACC_BOUNDS),
            )
        _sparsity_axis(ax)
        ax.set_ylim(-2, 102)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{title}\n{view.threat_text()}, battery {view.battery().get('name', NA)}")
        _legend(
            ax,
            view.recipes,
            [("-", "robust (mean over seeds)"), ("--", "clean"), ("band", "95 % t interval over seeds")],
        )

    return _render(draw, (7.5, 4.2), fmt)


CALIBRATION_PANELS = (
    ("ece_clean", "ECE, clean"),
    ("ece_adv", "ECE, under attack (worst case)"),
    ("nll_clean", "NLL, clean"),
    ("nll_adv", "NLL, under attack (worst case)"),
)


def calibration_figure(view: SweepView, fmt: Format) -> bytes:
    """ECE and NLL vs target sparsity, clean and under the worst-case attack (four panels)."""

    def draw(fig: Figure) -> None:
        axes = fig.subplots(2, 2, sharex=True)
        for i, (ax, (name, title)) in enumerate(zip([a for row in axes for a in row], CALIBRATION_PANELS)):
            for recipe in view.recipes:
                _draw_recipe(ax, recipe, series(view.recipe_cells(recipe), _record_metric(name), CAL_BOUNDS))
            _sparsity_axis(ax, label=i >= 2)
            ax.set_title(title)
            ax.set_ylabel("ECE (equal width, 15 bins)" if name.startswith("ece") else "NLL (nats)")
        _legend(axes[0][1], view.recipes, [("-", "mean over seeds"), ("band", "95 % t interval over seeds")])
        fig.suptitle(f"calibration vs sparsity: {view.threat_text()}")

    return _render(draw, (10.0, 6.5), fmt)


def reliability_cells(view: SweepView, keys: Sequence[str] | None = None) -> list[StoredCell]:
    """The cells that get a reliability diagram: `keys`, or per recipe its highest-sparsity cell of the first seed."""
    by_key = view.sweep.by_key()
    if keys is not None:
        unknown = [k for k in keys if k not in by_key]
        if unknown:
            raise UsageError(f"no cell with key {unknown[0]!r} in this sweep")
        return [by_key[k] for k in keys]
    chosen = []
    spec_seeds = list(view.sweep.spec.get("seeds") or [])
    for recipe in view.recipes:
        cells = [c for c in view.recipe_cells(recipe) if c.has_document_file()]
        if not cells:
            continue
        seeds = sorted(
            {c.seed for c in cells}, key=lambda s: (spec_seeds.index(s) if s in spec_seeds else len(spec_seeds), s)
        )
        first = [c for c in cells if c.seed == seeds[0]]
        chosen.append(max(first, key=lambda c: (c.sparsity, c.key)))
    return chosen


def _bins(doc: dict[str, Any], side: str) -> tuple[list[dict[str, Any]], float | None]:
    summary = (doc.get("calibration") or {}).get(side) or {}
    return (summary.get("reliability") or {}).get("bins") or [], (summary.get("ece") or {}).get("value")


def cell_reliability_figure(cell: StoredCell, fmt: Format) -> bytes:
    doc = cell.document(cache=False)
    (clean, clean_ece), (adv, adv_ece) = _bins(doc, "clean"), _bins(doc, "adversarial")
    return reliability_figure(clean, adv, clean_ece=clean_ece, adv_ece=adv_ece, fmt=fmt)


@dataclass(frozen=True)
class FigureSpec:
    stem: str
    caption: str
    draw: Callable[[Format], bytes]


def figure_specs(view: SweepView, reliability: Sequence[str] | None = None) -> list[FigureSpec]:
    specs = [
        FigureSpec(
            "robust_worst",
            "Robust accuracy (per-example worst case over the battery) vs target sparsity; dashed: clean accuracy.",
            lambda fmt: accuracy_figure(view, None, fmt),
        )
    ]
    used = {"robust_worst"}
    for label in view.labels:
        stem = f"robust_after_{_slug(label)}"
        while stem in used:
            stem += "_"
        used.add(stem)
        specs.append(
            FigureSpec(
                stem,
                f"Robust accuracy after {label} and every attack before it (cumulative) vs "
                "target sparsity; dashed: clean accuracy.",
                lambda fmt, label=label: accuracy_figure(view, label, fmt),
            )
        )
    specs.append(
        FigureSpec(
            "calibration",
            "ECE and NLL vs target sparsity, clean and under the worst-case attack.",
            lambda fmt: calibration_figure(view, fmt),
        )
    )
    for cell in reliability_cells(view, reliability):
        stem = f"reliability_{_slug(cell.recipe)}_{cell.key}"
        specs.append(
            FigureSpec(
                stem,
                f"Reliability diagrams of {cell.label} (cell {cell.key}): clean | under the worst-case attack.",
                lambda fmt, cell=cell: cell_reliability_figure(cell, fmt),
            )
        )
    return specs


# ---------------------------------------------------------------- tables


def _sparsity_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else NA


def _has_heads(view: SweepView) -> bool:
    """Whether any cell is multi-head: then the tables add the worst single head's robust accuracy."""
    return any(c.record.get("worst_head_robust_acc") is not None for c in view.cells)


def cells_table(view: SweepView) -> Table:
    """Every stored number of every cell, one row per cell."""
    heads = _has_heads(view)
    headers = (
        "recipe",
        "target",
        "achieved",
        "seed",
        "clean %",
        *(f"after {lbl} %" for lbl in view.labels),
        "worst %",
        *(("worst head %",) if heads else ()),
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
                c.recipe,
                _sparsity_text(r.get("sparsity")),
                fmt_frac_pct(r.get("achieved_sparsity")),
                str(c.seed),
                fmt_pct(r.get("clean_acc")),
                *(fmt_pct((r.get("attacks") or {}).get(lbl)) for lbl in view.labels),
                fmt_pct(r.get("robust_acc")),
                *((fmt_pct(r.get("worst_head_robust_acc")),) if heads else ()),
                fmt_num(r.get("ece_clean")),
                fmt_num(r.get("ece_adv")),
                fmt_num(r.get("nll_clean")),
                fmt_num(r.get("nll_adv")),
                "yes" if r.get("randomized") else "no",
                c.key,
                str(r.get("parent_key") or "-"),
            )
        )
    return Table(headers, tuple(rows), "lrrrr" + "r" * (len(view.labels) + heads) + "rrrrrlll")


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
        ("clean %", _record_metric("clean_acc"), 2),
        *((f"after {lbl} %", _attack_metric(lbl), 2) for lbl in view.labels),
        ("worst %", _record_metric("robust_acc"), 2),
        *((("worst head %", _record_metric("worst_head_robust_acc"), 2),) if _has_heads(view) else ()),
        ("ECE clean", _record_metric("ece_clean"), 4),
        ("ECE adv", _record_metric("ece_adv"), 4),
        ("NLL clean", _record_metric("nll_clean"), 4),
        ("NLL adv", _record_metric("nll_adv"), 4),
    ]
    rows = []
    for recipe in view.recipes:
        cells = view.recipe_cells(recipe)
        per_metric = [
            {p.sparsity: p for p in series(cells, fn, ACC_BOUNDS if digits == 2 else CAL_BOUNDS)}
            for _, fn, digits in metrics
        ]
        for sparsity in sorted({c.sparsity for c in cells}):
            seeds = sorted({c.seed for c in cells if c.sparsity == sparsity})
            achieved = series([c for c in cells if c.sparsity == sparsity], _record_metric("achieved_sparsity"))
            rows.append(
                (
                    recipe,
                    f"{sparsity:g}",
                    fmt_frac_pct(achieved[0].mean) if achieved else NA,
                    str(len(seeds)),
                    *(_mean_text(pm.get(sparsity), digits) for pm, (_, _, digits) in zip(per_metric, metrics)),
                )
            )
    headers = ("recipe", "target", "achieved (mean)", "seeds", *(m[0] for m in metrics))
    return Table(headers, tuple(rows), "lrrr" + "r" * len(metrics))


def cost_table(view: SweepView) -> Table:
    rows = [
        (
            c.recipe,
            f"{c.sparsity:g}",
            str(c.seed),
            fmt_seconds(c.record.get("train_seconds")),
            fmt_seconds(c.record.get("score_seconds")),
            fmt_int(c.record.get("n_forward")),
            fmt_int(c.record.get("n_backward")),
            c.key,
        )
        for c in view.cells
    ]
    total = [
        sum(v for c in view.cells if isinstance(v := c.record.get(k), int | float))
        for k in ("train_seconds", "score_seconds", "n_forward", "n_backward")
    ]
    rows.append(
        ("total", "", "", fmt_seconds(total[0]), fmt_seconds(total[1]), fmt_int(total[2]), fmt_int(total[3]), "")
    )
    headers = ("recipe", "target", "seed", "train s", "score s", "forward passes", "backward passes", "key")
    return Table(headers, tuple(rows), "lrrrrrrl")


# ---------------------------------------------------------------- paired comparisons


def _reference_pairs(view: SweepView, cell: StoredCell) -> list[tuple[str, str | None]]:
    """(what, reference key) pairs for one cell: its parent and the dense baseline of its seed (merged if equal)."""
    parent = cell.record.get("parent_key")
    baseline = next(
        (c.key for c in view.cells if c.recipe == view.parent_recipe and c.seed == cell.seed and c.sparsity == 0), None
    )
    if cell.recipe == view.parent_recipe and cell.sparsity == 0:
        baseline = None  # the dense baseline itself
    pairs = []
    if parent:
        pairs.append(("parent = dense baseline" if parent == baseline else "parent", parent))
    if baseline and baseline != parent and baseline != cell.key:
        pairs.append(("dense baseline", baseline))
    return pairs


def _paired_inputs(cell: StoredCell) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """(the document without its per-sample table except labels, the correct vectors), or why they are missing.

    Only what the comparisons need is kept: a large sweep's full per-sample tables would not fit in memory at once.
    """
    try:
        doc = cell.document(cache=False)
        slim = {k: v for k, v in doc.items() if k != "per_sample"}
        slim["per_sample"] = {"label": (doc.get("per_sample") or {}).get("label")}
        return slim, correct_vectors(doc)
    except UsageError as exc:  # a missing / damaged score file: say so, never guess
        return str(exc)


def paired_comparisons(view: SweepView) -> list[dict[str, Any]]:
    """Each cell against its parent and the dense baseline, example by example (exact McNemar, two-sided)."""
    by_key = view.sweep.by_key()
    inputs: dict[str, tuple[dict[str, Any], dict[str, Any]] | str] = {}

    def get(cell: StoredCell) -> tuple[dict[str, Any], dict[str, Any]] | str:
        if cell.key not in inputs:
            inputs[cell.key] = _paired_inputs(cell)
        return inputs[cell.key]

    out = []
    for cell in view.cells:
        for against, ref_key in _reference_pairs(view, cell):
            entry: dict[str, Any] = {
                "cell": cell.key,
                "cell_label": cell.label,
                "against": against,
                "reference": ref_key,
                "status": "ok",
            }
            ref = by_key.get(ref_key) if ref_key else None
            if ref is None:
                out.append(entry | {"status": "not comparable: reference cell not in this sweep"})
                continue
            entry["reference_label"] = ref.label
            ref_in, cell_in = get(ref), get(cell)
            if isinstance(ref_in, str) or isinstance(cell_in, str):
                out.append(entry | {"status": f"not comparable: {ref_in if isinstance(ref_in, str) else cell_in}"})
                continue
            (ref_doc, ref_vec), (doc, vec) = ref_in, cell_in
            reason = incomparable_reason(ref_doc, doc, ref.config, cell.config, allow_added_attacks=True)
            if reason:
                out.append(entry | {"status": f"not comparable: {reason}"})
                continue
            added = added_attacks(ref_doc, doc)
            if added:  # e.g. a randomized cell's adaptive attack: only the worst case is like for like
                entry["status"] = f"ok; worst case over the reference's attacks plus {', '.join(added)}"
            for name, key in (("clean", "clean acc"), ("robust", WORST)):
                test = mcnemar_test(ref_vec[key], vec[key])
                entry[name] = {
                    "reference_pct": 100.0 * float(ref_vec[key].mean()),
                    "cell_pct": 100.0 * float(vec[key].mean()),
                    "delta_pp": test["delta_pct"],
                    "lost": test["a_only"],
                    "gained": test["b_only"],
                    "n": test["n"],
                    "p_value": test["p_value"],
                    "test": test["test"],
                }
            out.append(entry)
    return out


def comparisons_table(comparisons: list[dict[str, Any]]) -> Table:
    rows = []
    for e in comparisons:
        c, r = e.get("clean") or {}, e.get("robust") or {}
        rows.append(
            (
                e["cell_label"],
                e["against"],
                e.get("reference_label", e.get("reference") or NA),
                fmt_int(r.get("n")),
                _signed(c.get("delta_pp")),
                fmt_p(c.get("p_value")),
                fmt_pct(r.get("reference_pct")),
                fmt_pct(r.get("cell_pct")),
                _signed(r.get("delta_pp")),
                fmt_int(r.get("lost")),
                fmt_int(r.get("gained")),
                fmt_p(r.get("p_value")),
                e["status"],
            )
        )
    headers = (
        "cell",
        "against",
        "reference",
        "n",
        "clean Δ pp",
        "clean p",
        "robust ref %",
        "robust %",
        "robust Δ pp",
        "lost",
        "gained",
        "McNemar p",
        "status",
    )
    return Table(headers, tuple(rows), "lllrrrrrrrrrl")


def _signed(value: Any) -> str:
    return f"{value:+.2f}" if isinstance(value, int | float) else NA


# ---------------------------------------------------------------- the report


def _battery_text(view: SweepView, battery: dict[str, Any], spec: dict[str, Any]) -> str:
    norm = (battery.get("threat") or {}).get("norm")
    configured = [  # the attacks that apply to the threat model's norm (a battery may list others)
        str(a.get("label")) for a in battery.get("attacks") or [] if not a.get("norms") or norm in a["norms"]
    ]
    added = [lbl for lbl in view.labels if lbl not in configured]
    text = f"{battery.get('name', spec.get('battery', NA))}: {', '.join(configured or view.labels) or NA}"
    return text + (f" (randomized cells: {', '.join(added)} first, adaptive)" if configured and added else "")


def summary_rows(view: SweepView) -> list[tuple[str, str]]:
    spec, battery = view.sweep.spec, view.battery()
    config = view.cells[0].config if view.cells else {}
    fingerprints = sorted({str(c.config.get("data_fingerprint")) for c in view.cells})
    return [
        ("dataset", str(config.get("dataset", spec.get("dataset", NA)))),
        ("examples", fmt_int(config.get("n"))),
        (
            "data fingerprint",
            ", ".join(fingerprints) + (" (DIFFERENT DATA IN ONE SWEEP)" if len(fingerprints) > 1 else ""),
        ),
        ("threat model", view.threat_text()),
        ("battery", _battery_text(view, battery, spec)),
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
    ]


NOTES = (
    "The x axis of every figure is the TARGET sparsity; the achieved sparsity of every cell is in the tables. "
    "Lines join the mean over seeds, small dots are single seeds, the band is a 95 % t interval of the mean over "
    "seeds (none with one seed), clipped to the metric's range. Solid: robust accuracy; dashed: clean accuracy in "
    "the same colour. A recipe with only a dense cell is drawn as a horizontal reference line. Colours and markers "
    "are fixed per recipe name."
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


@dataclass
class SweepReport:
    view: SweepView
    figures: list[FigureSpec]
    comparisons: list[dict[str, Any]]

    def tables(self) -> dict[str, Table]:
        return {
            "cells": cells_table(self.view),
            "means": means_table(self.view),
            "cost": cost_table(self.view),
            "comparisons": comparisons_table(self.comparisons),
        }


def _title(view: SweepView) -> str:
    spec = view.sweep.spec
    return f"robustprune sweep: robustness vs sparsity on {spec.get('dataset', 'data')} ({view.threat_text()})"


def render_sweep_markdown(report: SweepReport) -> str:
    t = report.tables()
    sections = [
        f"# {md_escape(_title(report.view))}",
        md_table(Table(("field", "value"), tuple(summary_rows(report.view)), "ll")),
        "## Robust accuracy vs sparsity",
        NOTES,
    ]
    for fig in report.figures:
        if fig.stem.startswith("reliability_"):
            continue
        if fig.stem == "calibration":
            sections += ["## Calibration vs sparsity"]
        sections += [f"![{md_escape(fig.caption)}]({FIGURES_DIR}/{fig.stem}.png)", md_escape(fig.caption)]
    reliability = [f for f in report.figures if f.stem.startswith("reliability_")]
    if reliability:
        sections += ["## Reliability diagrams"]
        for fig in reliability:
            sections += [f"![{md_escape(fig.caption)}]({FIGURES_DIR}/{fig.stem}.png)", md_escape(fig.caption)]
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
        "## Cost",
        COST_NOTE,
        md_table(t["cost"]),
    ]
    return "\n\n".join(sections) + "\n"


def render_sweep_html(report: SweepReport, pngs: dict[str, bytes]) -> str:
    from robustprune.reporting.html import _environment

    figures = [
        {
            "stem": f.stem,
            "caption": f.caption,
            "data": base64.b64encode(pngs[f.stem]).decode("ascii"),
            "reliability": f.stem.startswith("reliability_"),
        }
        for f in report.figures
    ]
    context = {
        "title": _title(report.view),
        "summary": summary_rows(report.view),
        "notes": NOTES,
        "comparison_note": COMPARISON_NOTE.replace("`", ""),
        "cost_note": COST_NOTE,
        "means_note": MEANS_NOTE,
        "figures": figures,
        **report.tables(),
    }
    return _environment().get_template(TEMPLATE).render(context)


def prepare_report(sweep_dir: str | Path, *, reliability: Sequence[str] | None = None) -> SweepReport:
    view = _view(load_sweep(sweep_dir))
    return SweepReport(view, figure_specs(view, reliability), paired_comparisons(view))


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
            root / "comparisons.json",
            {
                "schema_version": "1.0",
                "kind": "sweep_comparisons",
                "test": "mcnemar-exact (two-sided)",
                "comparisons": report.comparisons,
            },
        )
    )
    paths["markdown"] = str(write_text(root / "report.md", render_sweep_markdown(report)))
    paths["html"] = str(write_text(root / "report.html", render_sweep_html(report, pngs)))
    return paths
