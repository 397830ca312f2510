"""The sweep report's robust accuracy vs eps: each cell's curve (upper bounds from one run of minimum-norm attacks
merged with the battery's own points; robustprune.scoring.eps_curve), averaged over seeds per recipe and target
sparsity, as a table, a figure (one panel per recipe, one curve per sparsity) and the median minimal perturbation
vs sparsity. Present only when the sweep was run with an eps grid."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from robustprune.metrics.accuracy import wilson_pct
from robustprune.render.figures import Format, render_figure
from robustprune.render.format import NA, Table
from robustprune.reporting.sweep_figures import (
    BAND_TEXT,
    CONFIDENCE_TEXT,
    VERDICT_RINGS,
    Drawn,
    FigureSpec,
    _caption,
    _draw_recipe,
    _legend,
    _sparsity_axis,
    measured_text,
)
from robustprune.reporting.view import ACC_BOUNDS, CAL_BOUNDS, Point, SweepView, series
from robustprune.results.store import StoredCell

EPS_CURVE_NOTE = (
    "Robust accuracy (%) at each eps from one run of minimum-norm attacks per cell (FMN and FAB by default), in the "
    "battery's norm, merged with the battery's own verified points: UPPER BOUNDS from those attacks (every "
    "adversarial point re-checked), the mean over seeds. At the battery's eps a curve is never above the battery's "
    "number, which stays the headline. Median: the median minimal perturbation found over clean-correct examples "
    "(a cell where most examples were never broken has none)."
)
SPARSITY_CMAP = "viridis"
WILSON_BAND = {"facecolor": "none", "hatch": "////", "linewidth": 0.0, "alpha": 0.45}


def curve_cells(view: SweepView) -> list[StoredCell]:
    """The cells with a curve on the sweep's grid (the first cell's; a cell scored on another grid is left out)."""
    cells = [c for c in view.cells if c.record.eps_curve_grid and c.record.eps_curve_acc]
    if not cells:
        return []
    grid = cells[0].record.eps_curve_grid
    return [c for c in cells if c.record.eps_curve_grid == grid]


def _attack(cells: Sequence[StoredCell]) -> str:
    names = dict.fromkeys(c.record.eps_curve_attack or "minimum-norm attacks" for c in cells)
    return " / ".join(names)


def eps_curve_heading(view: SweepView) -> str:
    cells = curve_cells(view)
    return f"Robust accuracy vs eps (upper bounds from {_attack(cells)})" if cells else ""


def eps_curve_table(view: SweepView) -> Table | None:
    """One row per recipe and target sparsity, one column per eps; None when no cell has a curve."""
    cells = curve_cells(view)
    if not cells:
        return None
    grid = cells[0].record.eps_curve_grid
    rows = []
    for recipe in view.recipes:
        for sparsity in sorted({c.sparsity for c in cells if c.recipe == recipe}):
            same = [c for c in cells if c.recipe == recipe and c.sparsity == sparsity]
            values = [f"{statistics.fmean(c.record.eps_curve_acc[i] for c in same):.1f}" for i in range(len(grid))]
            medians = [c.record.median_min_distance for c in same if c.record.median_min_distance is not None]
            median = f"{statistics.fmean(medians):.3g}" if medians else NA
            rows.append((recipe, f"{sparsity:g}", str(len(same)), *values, median))
    headers = ("recipe", "target", "seeds", *(f"eps {e:.4g}" for e in grid), "median min. perturbation")
    return Table(headers, tuple(rows), "lrr" + "r" * (len(grid) + 1))


def _sparsity_color(sparsity: float) -> Any:
    return colormaps[SPARSITY_CMAP](0.05 + 0.85 * min(max(sparsity, 0.0), 1.0))


def _curve_points(cells: Sequence[StoredCell], n_eps: int) -> list[Point]:
    """Per eps index: the seeds' values, mean and t band (series groups by sparsity; all `cells` share one)."""
    points = []
    for i in range(n_eps):
        found = series(cells, lambda c, i=i: c.record.eps_curve_acc[i], ACC_BOUNDS)
        points.append(found[0])
    return points


def _battery_eps(view: SweepView) -> float | None:
    battery = view.battery()
    return battery.threat.eps if battery is not None else None


def eps_curve_uncertainty(view: SweepView) -> Drawn:
    """What the eps figure draws: a t band where a sparsity has several seeds, else a Wilson band from n."""
    drawn, cells = Drawn(), curve_cells(view)
    for recipe in view.recipes:
        for sparsity in {c.sparsity for c in cells if c.recipe == recipe}:
            group = [c for c in cells if c.recipe == recipe and c.sparsity == sparsity]
            n = group[0].record.config.n
            if len(group) > 1:
                drawn.band = True
            elif isinstance(n, int) and not isinstance(n, bool):
                drawn.bar_ns.add(n)
            else:
                drawn.bare = True
    return drawn


def eps_curve_figure(view: SweepView, fmt: Format) -> bytes:
    """One panel per recipe: robust accuracy vs eps, one curve per target sparsity (colour = sparsity), the mean
    over seeds with its t band, or a one-seed cell's Wilson band; a dotted line at the battery's eps."""
    cells = curve_cells(view)
    grid = cells[0].record.eps_curve_grid
    recipes = [r for r in view.recipes if any(c.recipe == r for c in cells)]
    sparsities = sorted({c.sparsity for c in cells})
    ncols = min(4, len(recipes))
    nrows = math.ceil(len(recipes) / ncols)
    battery_eps = _battery_eps(view)

    def draw(fig: Figure) -> None:
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
        flat = [ax for row in axes for ax in row]
        for ax in flat[len(recipes) :]:
            ax.set_visible(False)
        for ax, recipe in zip(flat, recipes):
            for sparsity in sorted({c.sparsity for c in cells if c.recipe == recipe}):
                group = [c for c in cells if c.recipe == recipe and c.sparsity == sparsity]
                points = _curve_points(group, len(grid))
                color = _sparsity_color(sparsity)
                ax.plot(grid, [p.mean for p in points], color=color, linewidth=1.5, marker=".", markersize=4)
                if len(group) > 1:
                    lo = [p.lo if p.lo is not None else p.mean for p in points]
                    hi = [p.hi if p.hi is not None else p.mean for p in points]
                    ax.fill_between(
                        grid, lo, hi, color=color, alpha=0.2, linewidth=0, gid=f"t_band_{recipe}_{sparsity:g}"
                    )
                else:  # hatched, so it is not mistaken for the band over seeds
                    intervals = [wilson_pct(p.mean, group[0].record.config.n or 0) for p in points]
                    lo = [iv[0] if iv else p.mean for iv, p in zip(intervals, points)]
                    hi = [iv[1] if iv else p.mean for iv, p in zip(intervals, points)]
                    ax.fill_between(
                        grid, lo, hi, **WILSON_BAND, edgecolor=color, gid=f"wilson_band_{recipe}_{sparsity:g}"
                    )
            if battery_eps is not None:
                ax.axvline(battery_eps, color="grey", linestyle=":", linewidth=1.0)
            doubts = sorted({c.record.verdict for c in cells if c.recipe == recipe} & set(VERDICT_RINGS))
            if doubts:  # the curve inherits the evaluation's doubt (eps_curve.caveat): say it on the panel
                worst = doubts[-1] if "untrusted" not in doubts else "untrusted"
                ax.set_title(f"{recipe} ({'/'.join(doubts)} evaluation)", fontsize=9, color=VERDICT_RINGS[worst])
            else:
                ax.set_title(recipe, fontsize=9)
            ax.set_ylim(-2, 102)
            ax.set_xlim(min(grid), max(grid))
            ax.grid(True, linewidth=0.4, alpha=0.5)
        for ax in axes[-1]:
            ax.set_xlabel(f"eps ({view.threat_text().split(',')[0]})")
        for row in axes:
            row[0].set_ylabel("robust accuracy (%)")
        drawn = eps_curve_uncertainty(view)
        handles: list[Any] = [
            Line2D([], [], color=_sparsity_color(s), linewidth=1.5, label=f"sparsity {100 * s:g} %") for s in sparsities
        ]
        if drawn.band:
            handles.append(Patch(facecolor="grey", alpha=0.25, label=BAND_TEXT))
        if drawn.bar_ns:
            label = f"hatched: {CONFIDENCE_TEXT} Wilson interval (one seed), {drawn.n_text()}"
            handles.append(Patch(**WILSON_BAND, edgecolor="grey", label=label))
        if battery_eps is not None:
            handles.append(Line2D([], [], color="grey", linestyle=":", label="the battery's eps"))
        fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
        fig.suptitle(
            f"robust accuracy vs eps: upper bounds from {_attack(cells)}\n{view.threat_text()}, {measured_text(view)}",
            fontsize=10,
        )

    return render_figure(draw, (2.9 * ncols + 2.2, 2.5 * nrows + 0.9), fmt)


def _median_metric(cell: StoredCell) -> float | None:
    return cell.record.median_min_distance


def median_distance_uncertainty(view: SweepView) -> Drawn:
    drawn = Drawn()
    cells = curve_cells(view)
    for recipe in view.recipes:
        drawn.add(series([c for c in cells if c.recipe == recipe], _median_metric, CAL_BOUNDS), {})
    return drawn


def median_distance_figure(view: SweepView, fmt: Format) -> bytes:
    """The median minimal perturbation vs target sparsity, one line per recipe (y from zero), the battery's eps
    dotted."""
    cells = curve_cells(view)
    recipes = [r for r in view.recipes if any(c.recipe == r for c in cells)]
    battery_eps = _battery_eps(view)

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        drawn = Drawn()
        for recipe in recipes:
            points = series([c for c in cells if c.recipe == recipe], _median_metric, CAL_BOUNDS)
            drawn.add(points, {})
            if points:
                _draw_recipe(ax, recipe, points, gid="median_")
        extra = [("-", "median (mean over seeds)" if drawn.band else "median (one seed, no interval)")]
        if battery_eps is not None:
            ax.axhline(battery_eps, color="grey", linestyle=":", linewidth=1.0)
            extra.append((":", "the battery's eps"))
        _sparsity_axis(ax)
        top = ax.get_ylim()[1]
        ax.set_ylim(0.0, top if top > 0 else 1.0)
        ax.set_ylabel(f"median minimal perturbation ({view.threat_text().split(',')[0]})")
        ax.set_title(
            f"median minimal perturbation vs sparsity: {_attack(cells)}\n{view.threat_text()}, {measured_text(view)}"
        )
        _legend(ax, recipes, [*extra, *drawn.legend()])

    return render_figure(draw, (7.5, 4.2), fmt)


def eps_figure_specs(view: SweepView) -> list[FigureSpec]:
    """The section's figures, or none when no cell has a curve."""
    cells = curve_cells(view)
    if not cells:
        return []
    measured = f"Measured on {measured_text(view)}."
    missing = sum(1 for c in cells if c.record.median_min_distance is None)
    none_found = f" {missing} cell(s) have no median (most examples never broken) and are not drawn." if missing else ""
    return [
        FigureSpec(
            "robust_vs_eps",
            _caption(
                f"Robust accuracy vs eps, one panel per recipe and one curve per target sparsity: upper bounds from "
                f"{_attack(cells)}; dotted: the battery's eps, where the headline number is measured. A panel "
                "titled caution or untrusted holds cells whose evaluation is in doubt: their curves may be far too "
                "high (a randomized model, for one, weakens the gradient-based minimum-norm attacks).",
                eps_curve_uncertainty(view).caption("robust accuracy").replace("error bars", "hatched band"),
                measured,
            ),
            lambda fmt: eps_curve_figure(view, fmt),
            "eps_curve",
        ),
        FigureSpec(
            "median_min_perturbation",
            _caption(
                f"Median minimal adversarial perturbation ({_attack(cells)}) vs target sparsity; dotted: the "
                f"battery's eps; y from zero.{none_found}",
                median_distance_uncertainty(view).caption("median"),
                measured,
            ),
            lambda fmt: median_distance_figure(view, fmt),
            "eps_curve",
        ),
    ]
