"""The sweep as the report sees it: recipes in order, attack labels in battery order, and each metric per recipe
and target sparsity as seed values with their mean and 95 % t band."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from robustprune.config import BatterySpec
from robustprune.metrics.seeds import Bounds, mean_band
from robustprune.render.format import NA, fmt_eps
from robustprune.results.store import StoredCell, StoredSweep

ACC_BOUNDS: Bounds = (0.0, 100.0)
CAL_BOUNDS: Bounds = (0.0, None)

CellMetric = Callable[[StoredCell], float | None]

# What the tables and figures plot, read from each cell's record.
RECORD_METRICS: dict[str, CellMetric] = {
    "clean_acc": lambda c: c.record.clean_acc,
    "robust_acc": lambda c: c.record.robust_acc,
    "worst_head_robust_acc": lambda c: c.record.worst_head_robust_acc,
    "ece_clean": lambda c: c.record.ece_clean,
    "ece_adv": lambda c: c.record.ece_adv,
    "nll_clean": lambda c: c.record.nll_clean,
    "nll_adv": lambda c: c.record.nll_adv,
    "achieved_sparsity": lambda c: c.record.achieved_sparsity,
}


def attack_metric(label: str) -> CellMetric:
    """Robust accuracy after attack `label` (cumulative)."""
    return lambda cell: cell.record.attacks.get(label)


@dataclass(frozen=True)
class Point:
    sparsity: float  # target
    values: tuple[float, ...]  # one per seed that has the metric
    mean: float
    lo: float | None
    hi: float | None


def series(cells: Sequence[StoredCell], metric: CellMetric, bounds: Bounds = (None, None)) -> list[Point]:
    """The metric per target sparsity of one recipe's cells: seed values, mean and band, sorted by sparsity."""
    groups: dict[float, list[float]] = {}
    for cell in cells:
        value = metric(cell)
        if isinstance(value, int | float) and math.isfinite(value):
            groups.setdefault(cell.sparsity, []).append(float(value))
    return [Point(s, tuple(v), *mean_band(v, bounds=bounds)) for s, v in sorted(groups.items())]


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

    def battery(self) -> BatterySpec | None:
        return next((b for c in self.cells if (b := c.record.config.battery_spec()) is not None), None)

    def battery_name(self) -> str:
        battery = self.battery()
        return battery.name if battery is not None else NA

    def threat_text(self) -> str:
        battery, spec = self.battery(), self.sweep.spec
        norm = battery.threat.norm if battery is not None else (spec.norm if spec is not None else None) or NA
        eps = battery.threat.eps if battery is not None else (spec.eps if spec is not None else None)
        return f"{norm}, eps = {fmt_eps(norm, eps)}"


def make_view(sweep: StoredSweep) -> SweepView:
    names = {c.recipe for c in sweep.cells}
    spec = sweep.spec
    spec_recipes = [*spec.recipes, spec.parent_recipe] if spec is not None else []
    recipes = list(dict.fromkeys([*(r for r in spec_recipes if r in names), *sorted(names)]))
    # Battery order from the resolved battery; cell.json / results.json store the attacks dict with sorted keys.
    present = {label for c in sweep.cells for label in c.record.attacks}
    battery_labels: list[str] = []
    for cell in sweep.cells:
        battery = cell.record.config.battery_spec()
        battery_labels += [a.label for a in battery.attacks] if battery is not None else []
    labels = [lbl for lbl in dict.fromkeys(battery_labels) if lbl in present]
    # Attacks outside the configured battery are the adaptive ones scoring adds for a randomized model, and it
    # runs them first: so they come first, and "after X" columns stay cumulative in each cell's own order.
    labels = sorted(present - set(labels)) + labels
    return SweepView(sweep, recipes, labels, spec.parent_recipe if spec is not None else "dense")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"
