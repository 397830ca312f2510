"""The sweep report's figures: robust accuracy vs target sparsity (worst case and after each attack), calibration
vs sparsity, and reliability diagrams of chosen cells. Conventions (research/ecosystem.md section 3): x = TARGET
sparsity; one line per recipe in its fixed colour and marker; clean accuracy dashed in the same colour; mean over
seeds with a 95 % t band (none with one seed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from robustprune.errors import UsageError
from robustprune.render.figures import Format, reliability_figure, render_figure
from robustprune.reporting.styles import recipe_style
from robustprune.reporting.view import (
    ACC_BOUNDS,
    CAL_BOUNDS,
    RECORD_METRICS,
    Point,
    SweepView,
    attack_metric,
    series,
    slug,
)
from robustprune.results.store import StoredCell


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


# Cells whose evaluation verdict is not `trusted` get a ring on the accuracy figures, in the verdict's colour.
VERDICT_RINGS = {"caution": "#e08a00", "untrusted": "#b00020"}


def _ring_style(verdict: str) -> dict[str, Any]:
    return {
        "linestyle": "none",
        "marker": "o",
        "markersize": 12 if verdict == "caution" else 14,
        "markerfacecolor": "none",
        "markeredgecolor": VERDICT_RINGS[verdict],
        "markeredgewidth": 1.6,
    }


def _verdict_rings(ax: Any, view: SweepView, metric: Callable[[StoredCell], float | None]) -> list[str]:
    """Ring every cell (its own seed value) whose verdict is caution or untrusted; returns the verdicts drawn."""
    drawn = []
    for verdict in VERDICT_RINGS:
        points = [
            (_x(c.sparsity), float(value))
            for c in view.cells
            if c.record.verdict == verdict and isinstance(value := metric(c), int | float)
        ]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], zorder=5, **_ring_style(verdict))
            drawn.append(verdict)
    return drawn


def _legend(ax: Any, recipes: list[str], extra: list[tuple[str, str]], rings: Sequence[str] = ()) -> None:
    """One entry per recipe (colour + marker), then the line styles; "band" in `extra` adds a shaded patch; then
    the verdict rings drawn."""
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
    handles += [
        Line2D([], [], label=f"{verdict} evaluation (verdict panel)", **_ring_style(verdict)) for verdict in rings
    ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)


def _sparsity_axis(ax: Any, label: bool = True) -> None:
    ax.set_xlim(-3, 103)
    if label:
        ax.set_xlabel("target sparsity (% of Conv/Linear weights)")
    ax.grid(True, linewidth=0.4, alpha=0.5)


def accuracy_figure(view: SweepView, label: str | None, fmt: Format) -> bytes:
    """Robust accuracy after attack `label` (cumulative; None: worst case) per recipe, clean accuracy dashed."""
    metric = attack_metric(label) if label is not None else RECORD_METRICS["robust_acc"]
    title = f"robust accuracy after {label} (cumulative)" if label is not None else "robust accuracy (worst case)"

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        for recipe in view.recipes:
            cells = view.recipe_cells(recipe)
            _draw_recipe(
                ax,
                recipe,
                series(cells, metric, ACC_BOUNDS),
                dashed=series(cells, RECORD_METRICS["clean_acc"], ACC_BOUNDS),
            )
        rings = _verdict_rings(ax, view, metric)
        _sparsity_axis(ax)
        ax.set_ylim(-2, 102)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{title}\n{view.threat_text()}, battery {view.battery_name()}")
        _legend(
            ax,
            view.recipes,
            [("-", "robust (mean over seeds)"), ("--", "clean"), ("band", "95 % t interval over seeds")],
            rings,
        )

    return render_figure(draw, (7.5, 4.2), fmt)


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
                _draw_recipe(ax, recipe, series(view.recipe_cells(recipe), RECORD_METRICS[name], CAL_BOUNDS))
            _sparsity_axis(ax, label=i >= 2)
            ax.set_title(title)
            ax.set_ylabel("ECE (equal width, 15 bins)" if name.startswith("ece") else "NLL (nats)")
        _legend(axes[0][1], view.recipes, [("-", "mean over seeds"), ("band", "95 % t interval over seeds")])
        fig.suptitle(f"calibration vs sparsity: {view.threat_text()}")

    return render_figure(draw, (10.0, 6.5), fmt)


def reliability_cells(view: SweepView, keys: Sequence[str] | None = None) -> list[StoredCell]:
    """The cells that get a reliability diagram: `keys`, or per recipe its highest-sparsity cell of the first seed."""
    by_key = view.sweep.by_key()
    if keys is not None:
        unknown = [k for k in keys if k not in by_key]
        if unknown:
            raise UsageError(f"no cell with key {unknown[0]!r} in this sweep")
        return [by_key[k] for k in keys]
    chosen = []
    spec_seeds = list(view.sweep.spec.seeds) if view.sweep.spec is not None else []
    for recipe in view.recipes:
        cells = [c for c in view.recipe_cells(recipe) if c.has_result_file()]
        if not cells:
            continue
        seeds = sorted(
            {c.seed for c in cells}, key=lambda s: (spec_seeds.index(s) if s in spec_seeds else len(spec_seeds), s)
        )
        first = [c for c in cells if c.seed == seeds[0]]
        chosen.append(max(first, key=lambda c: (c.sparsity, c.key)))
    return chosen


def cell_reliability_figure(cell: StoredCell, fmt: Format) -> bytes:
    calibration = cell.result(cache=False).calibration
    clean, adv = calibration.clean, calibration.adversarial
    return reliability_figure(
        clean.reliability.bins, adv.reliability.bins, clean_ece=clean.ece.value, adv_ece=adv.ece.value, fmt=fmt
    )


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
        stem = f"robust_after_{slug(label)}"
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
        stem = f"reliability_{slug(cell.recipe)}_{cell.key}"
        specs.append(
            FigureSpec(
                stem,
                f"Reliability diagrams of {cell.label} (cell {cell.key}): clean | under the worst-case attack.",
                lambda fmt, cell=cell: cell_reliability_figure(cell, fmt),
            )
        )
    return specs
