"""The sweep report's robust accuracy vs eps per sparsity: each cell's FMN curve (upper bounds, one minimum-norm
run per cell; robustprune.scoring.eps_curve), averaged over seeds per recipe and target sparsity. Present only when
the sweep was run with an eps grid."""

from __future__ import annotations

import statistics

from robustprune.render.format import NA, Table
from robustprune.reporting.view import SweepView

EPS_CURVE_NOTE = (
    "Robust accuracy (%) at each eps from one FMN minimum-norm run per cell, in the battery's norm: UPPER BOUNDS from "
    "FMN (every adversarial point re-checked), the mean over seeds. They come from a different attack than the "
    "battery, so at the battery's eps they need not match its number, which stays the headline. Median: the median "
    "minimal perturbation FMN found over clean-correct examples."
)


def eps_curve_table(view: SweepView) -> Table | None:
    """One row per recipe and target sparsity, one column per eps; None when no cell has a curve."""
    cells = [c for c in view.cells if c.record.eps_curve_grid and c.record.eps_curve_acc]
    if not cells:
        return None
    grid = cells[0].record.eps_curve_grid
    attack = cells[0].record.eps_curve_attack or "FMN"
    rows = []
    for recipe in view.recipes:
        for sparsity in sorted({c.sparsity for c in cells if c.recipe == recipe}):
            group = [c for c in cells if c.recipe == recipe and c.sparsity == sparsity]
            same = [c for c in group if c.record.eps_curve_grid == grid]
            values = [
                f"{statistics.fmean(c.record.eps_curve_acc[i] for c in same):.1f}" if same else NA
                for i in range(len(grid))
            ]
            medians = [c.record.median_min_distance for c in same if c.record.median_min_distance is not None]
            median = f"{statistics.fmean(medians):.3g}" if medians else NA
            rows.append((recipe, f"{sparsity:g}", str(len(same)), *values, median))
    headers = ("recipe", "target", "seeds", *(f"eps {e:.4g}" for e in grid), f"median ({attack})")
    return Table(headers, tuple(rows), "lrr" + "r" * (len(grid) + 1))
