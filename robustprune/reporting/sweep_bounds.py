"""The sweep report's bracket figure: per recipe, the band between the certified lower bound and the attacked upper
bound of robust accuracy vs target sparsity (means over seeds), the exact value marked where a cell's MILP decided
every example. Drawn only when some cell has bounds."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from robustprune.render.figures import Format, render_figure
from robustprune.reporting.styles import recipe_style
from robustprune.reporting.sweep_figures import FigureSpec, _sparsity_axis, _x, measured_text
from robustprune.reporting.view import SweepView
from robustprune.results.store import StoredCell


def bounded_cells(view: SweepView) -> list[StoredCell]:
    return [c for c in view.cells if c.record.certified_acc is not None and c.record.robust_acc is not None]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def bracket_figure(view: SweepView, fmt: Format) -> bytes:
    cells = bounded_cells(view)
    recipes = [r for r in view.recipes if any(c.recipe == r for c in cells)]

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        for recipe in recipes:
            color, marker = recipe_style(recipe)
            group = [c for c in cells if c.recipe == recipe]
            xs = sorted({c.sparsity for c in group})
            upper = [_mean([c.record.robust_acc for c in group if c.sparsity == s]) for s in xs]
            lower = [_mean([c.record.certified_acc for c in group if c.sparsity == s]) for s in xs]
            at = [_x(s) for s in xs]
            ax.plot(at, upper, color=color, marker=marker, markeredgecolor="black", markeredgewidth=0.5, linewidth=1.6)
            ax.plot(at, lower, color=color, linestyle="--", linewidth=1.1)
            ax.fill_between(at, lower, upper, color=color, alpha=0.18, linewidth=0, gid=f"bracket_{recipe}")
            exact = [(_x(c.sparsity), c.record.exact_acc) for c in group if c.record.exact_acc is not None]
            if exact:
                ax.plot(
                    [e[0] for e in exact],
                    [e[1] for e in exact],
                    linestyle="none",
                    marker="*",
                    markersize=11,
                    color=color,
                    markeredgecolor="black",
                    gid=f"exact_{recipe}",
                )
        _sparsity_axis(ax)
        ax.set_ylim(-2, 102)
        ax.set_ylabel("robust accuracy (%)")
        ax.set_title(f"the bracket: certified (lower) to attacked (upper) robust accuracy\n{measured_text(view)}")
        handles: list[Any] = [
            Line2D([], [], color=recipe_style(r)[0], marker=recipe_style(r)[1], label=r) for r in recipes
        ]
        handles += [
            Line2D([], [], color="grey", label="attacked (upper bound)"),
            Line2D([], [], color="grey", linestyle="--", label="certified (lower bound)"),
            Patch(facecolor="grey", alpha=0.25, label="where the truth lies"),
            Line2D([], [], color="grey", marker="*", linestyle="none", markersize=10, label="exact (MILP decided all)"),
        ]
        fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)

    return render_figure(draw, (8.5, 4.2), fmt)


def bracket_figure_specs(view: SweepView) -> list[FigureSpec]:
    if not bounded_cells(view):
        return []
    return [
        FigureSpec(
            "bracket",
            "Robust accuracy vs target sparsity as a bracket: the attacked robust accuracy (solid, an upper bound) and "
            "the certified one (dashed, a lower bound: CROWN, and the MILP where --certify exact ran), means over "
            "seeds; stars mark cells whose exact search decided every example (the exact robust accuracy). "
            f"Measured on {measured_text(view)}.",
            lambda fmt: bracket_figure(view, fmt),
        )
    ]
