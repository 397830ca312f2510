"""The sweep report's figures: robust accuracy vs target sparsity (worst case and after each attack), calibration
vs sparsity, and reliability diagrams of chosen cells. Conventions (research/ecosystem.md section 3): x = TARGET
sparsity; one line per recipe in its fixed colour and marker; clean accuracy dashed in the same colour; mean over
seeds with a 95 % t band; a point measured on one seed gets the cell's own 95 % Wilson interval (from its n) as
error bars on the accuracy figures. Legends and captions name only the intervals actually drawn; calibration axes
start at zero; every figure's title states n, the seeds and the battery."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from robustprune.errors import UsageError
from robustprune.metrics.accuracy import wilson_pct
from robustprune.render.figures import Format, reliability_figure, render_figure
from robustprune.render.format import NA
from robustprune.reporting.styles import recipe_style
from robustprune.reporting.view import (
    ACC_BOUNDS,
    CAL_BOUNDS,
    RECORD_METRICS,
    CellMetric,
    Point,
    SweepView,
    attack_metric,
    series,
    slug,
)
from robustprune.results.store import StoredCell


def _x(sparsity: float) -> float:
    return 100.0 * sparsity


CONFIDENCE_TEXT = "95 %"
BAND_TEXT = f"band: {CONFIDENCE_TEXT} t interval over seeds"
BOX_HALF_WIDTH = 1.5  # a lone banded point's band: a shaded box this many x units (sparsity %) either side


@dataclass(frozen=True)
class Bar:
    lo: float
    hi: float
    n: int


def one_seed_bars(cells: Sequence[StoredCell], metric: CellMetric, points: Sequence[Point]) -> dict[float, Bar]:
    """Per target sparsity measured on ONE seed: the Wilson interval of that cell's accuracy from its n."""
    bars = {}
    for point in points:
        if len(point.values) != 1:
            continue
        cell = next(
            (c for c in cells if c.sparsity == point.sparsity and isinstance(metric(c), int | float)),
            None,
        )
        n = cell.record.config.n if cell is not None else None
        if isinstance(n, int) and not isinstance(n, bool) and (interval := wilson_pct(point.mean, n)) is not None:
            bars[point.sparsity] = Bar(*interval, n)
    return bars


@dataclass
class Drawn:
    """The uncertainty a figure draws (what its legend and caption may name)."""

    band: bool = False  # a t band over seeds somewhere
    bar_ns: set[int] = field(default_factory=set)  # the n of every cell drawn with Wilson bars
    bare: bool = False  # some one-seed point has no interval (calibration metrics, or n unknown)

    def add(self, points: Sequence[Point], bars: dict[float, Bar]) -> None:
        for p in points:
            if p.lo is not None and p.hi is not None:
                self.band = True
            elif p.sparsity in bars:
                self.bar_ns.add(bars[p.sparsity].n)
            else:
                self.bare = True

    def n_text(self) -> str:
        ns = sorted(self.bar_ns)
        return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]} per cell"

    def legend(self) -> list[tuple[str, str]]:
        entries = []
        if self.band:
            entries += [("dots", "small markers: each seed"), ("band", BAND_TEXT)]
        if self.bar_ns:
            entries.append(("bars", f"bars: {CONFIDENCE_TEXT} Wilson interval (one seed), {self.n_text()}"))
        return entries

    def caption(self, what: str) -> str:
        """One sentence naming the intervals drawn for `what` (the solid lines' metric), or saying none is."""
        parts = []
        if self.bar_ns:
            parts.append(f"error bars: {CONFIDENCE_TEXT} Wilson interval of a one-seed cell's {what} ({self.n_text()})")
        if self.band:
            parts.append(f"shaded: {CONFIDENCE_TEXT} t interval of the mean {what} over seeds")
        if self.bare:
            parts.append(
                "one-seed points without error bars: no interval is drawn"
                if self.bar_ns
                else "points from one seed: no interval is drawn"
            )
        text = "; ".join(parts)
        return f"{text[:1].upper()}{text[1:]}." if text else ""


def _draw_recipe(
    ax: Any,
    recipe: str,
    points: list[Point],
    *,
    dashed: list[Point] | None = None,
    bars: dict[float, Bar] | None = None,
    gid: str = "",
) -> None:
    """Mean line with markers, seed values as small dots, the 95 % t band over seeds where a point has several,
    Wilson error bars (`bars`) where it has one; a dense-only recipe as a horizontal reference."""
    color, marker = recipe_style(recipe)
    name = f"{gid}{slug(recipe)}"
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
    if banded:
        if only_dense:
            ax.axhspan(banded[0].lo, banded[0].hi, color=color, alpha=0.10, linewidth=0, gid=f"t_band_{name}")
        elif len(banded) == len(points) > 1:
            ax.fill_between(
                [_x(p.sparsity) for p in banded],
                [p.lo for p in banded],
                [p.hi for p in banded],
                color=color,
                alpha=0.15,
                linewidth=0,
                gid=f"t_band_{name}",
            )
        else:  # a banded point among one-seed points, or alone: a shaded box, still a band (not a bar)
            for i, p in enumerate(banded):
                x = _x(p.sparsity)
                ax.fill_between(
                    [x - BOX_HALF_WIDTH, x + BOX_HALF_WIDTH],
                    [p.lo, p.lo],
                    [p.hi, p.hi],
                    color=color,
                    alpha=0.25,
                    linewidth=0,
                    gid=f"t_band_{name}_{i}",
                )
    single = [(p, bars[p.sparsity]) for p in points if len(p.values) == 1 and p.sparsity in (bars or {})]
    if single:
        container = ax.errorbar(
            [_x(p.sparsity) for p, _ in single],
            [p.mean for p, _ in single],
            yerr=[[max(p.mean - b.lo, 0.0) for p, b in single], [max(b.hi - p.mean, 0.0) for p, b in single]],
            fmt="none",
            ecolor=color,
            elinewidth=1.1,
            capsize=3,
            capthick=1.1,
            zorder=3,
        )
        container.lines[2][0].set_gid(f"wilson_bars_{name}")


def seeds_text(view: SweepView) -> str:
    seeds = sorted({c.seed for c in view.cells})
    if not seeds:
        return f"seeds {NA}"
    if len(seeds) == 1:
        return f"1 seed ({seeds[0]})"
    listed = ", ".join(map(str, seeds)) if len(seeds) <= 5 else f"{seeds[0]} to {seeds[-1]}"
    return f"{len(seeds)} seeds ({listed})"


def n_text(view: SweepView) -> str:
    ns = sorted({n for c in view.cells if isinstance(n := c.record.config.n, int)})
    if not ns:
        return f"n = {NA}"
    return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]} per cell"


def measured_text(view: SweepView) -> str:
    """What every figure of the sweep was measured on: examples per cell, seeds, battery."""
    return f"{n_text(view)}, {seeds_text(view)}, battery {view.battery_name()}"


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
    """One entry per recipe (colour + marker), then the line styles; "band" in `extra` adds a shaded patch, "bars"
    an error bar, "dots" a small marker; then the verdict rings drawn."""
    handles: list[Any] = []
    for recipe in recipes:
        color, marker = recipe_style(recipe)
        handles.append(
            Line2D([], [], color=color, marker=marker, markeredgecolor="black", markeredgewidth=0.5, label=recipe)
        )
    handles += [_legend_handle(style, text) for style, text in extra]
    handles += [
        Line2D([], [], label=f"{verdict} evaluation (verdict panel)", **_ring_style(verdict)) for verdict in rings
    ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)


def _legend_handle(style: str, text: str) -> Any:
    if style == "band":
        return Patch(facecolor="grey", alpha=0.25, label=text)
    if style == "bars":
        return Line2D(
            [], [], color="grey", linestyle="none", marker="|", markersize=10, markeredgewidth=1.2, label=text
        )
    if style == "dots":
        return Line2D([], [], color="grey", linestyle="none", marker="o", markersize=2.5, alpha=0.6, label=text)
    return Line2D([], [], color="grey", linestyle=style, label=text)


def _sparsity_axis(ax: Any, label: bool = True) -> None:
    ax.set_xlim(-3, 103)
    if label:
        ax.set_xlabel("target sparsity (% of Conv/Linear weights; of channels for structured recipes)")
    ax.grid(True, linewidth=0.4, alpha=0.5)


def _accuracy_metric(label: str | None) -> CellMetric:
    return attack_metric(label) if label is not None else RECORD_METRICS["robust_acc"]


def accuracy_uncertainty(view: SweepView, label: str | None) -> Drawn:
    """The intervals the accuracy figure of `label` draws (for its legend and caption)."""
    metric, drawn = _accuracy_metric(label), Drawn()
    for recipe in view.recipes:
        cells = view.recipe_cells(recipe)
        points = series(cells, metric, ACC_BOUNDS)
        drawn.add(points, one_seed_bars(cells, metric, points))
    return drawn


def accuracy_figure(view: SweepView, label: str | None, fmt: Format) -> bytes:
    """Robust accuracy after attack `label` (cumulative; None: worst case) per recipe, clean accuracy dashed."""
    metric = _accuracy_metric(label)
    title = f"robust accuracy after {label} (cumulative)" if label is not None else "robust accuracy (worst case)"

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        drawn = Drawn()
        for recipe in view.recipes:
            cells = view.recipe_cells(recipe)
            points = series(cells, metric, ACC_BOUNDS)
            bars = one_seed_bars(cells, metric, points)
            drawn.add(points, bars)
            _draw_recipe(ax, recipe, points, dashed=series(cells, RECORD_METRICS["clean_acc"], ACC_BOUNDS), bars=bars)
        rings = _verdict_rings(ax, view, metric)
        _sparsity_axis(ax)
        ax.set_ylim(-2, 102)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{title}\n{view.threat_text()}, {measured_text(view)}")
        robust = "robust (mean over seeds)" if drawn.band else "robust (one seed)"
        _legend(ax, view.recipes, [("-", robust), ("--", "clean"), *drawn.legend()], rings)

    return render_figure(draw, (7.5, 4.2), fmt)


CALIBRATION_PANELS = (
    ("ece_clean", "ECE, clean"),
    ("ece_adv", "ECE, under attack (worst case)"),
    ("nll_clean", "NLL, clean"),
    ("nll_adv", "NLL, under attack (worst case)"),
)


def calibration_uncertainty(view: SweepView) -> Drawn:
    drawn = Drawn()
    for name, _ in CALIBRATION_PANELS:
        for recipe in view.recipes:
            drawn.add(series(view.recipe_cells(recipe), RECORD_METRICS[name], CAL_BOUNDS), {})
    return drawn


def calibration_figure(view: SweepView, fmt: Format) -> bytes:
    """ECE and NLL vs target sparsity, clean and under the worst-case attack (four panels, y from zero)."""

    def draw(fig: Figure) -> None:
        axes = fig.subplots(2, 2, sharex=True)
        drawn = Drawn()
        for i, (ax, (name, title)) in enumerate(zip([a for row in axes for a in row], CALIBRATION_PANELS)):
            for recipe in view.recipes:
                points = series(view.recipe_cells(recipe), RECORD_METRICS[name], CAL_BOUNDS)
                drawn.add(points, {})
                _draw_recipe(ax, recipe, points, gid=f"{name}_")
            _sparsity_axis(ax, label=i >= 2)
            ax.set_title(title)
            ax.set_ylabel("ECE (equal width, 15 bins)" if name.startswith("ece") else "NLL (nats)")
            # From zero, so a change of 0.157 -> 0.176 looks as small as it is.
            top = ax.get_ylim()[1]
            ax.set_ylim(0.0, top if top > 0 else 1.0)
        mean = "mean over seeds" if drawn.band else "one seed, no interval"
        _legend(axes[0][1], view.recipes, [("-", mean), *drawn.legend()])
        fig.suptitle(f"calibration vs sparsity: {view.threat_text()}\n{measured_text(view)}")

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


def cell_measured_text(cell: StoredCell) -> str:
    """What one cell was measured on: its examples, its seed, its battery."""
    n = cell.record.config.n
    battery = cell.record.config.battery_spec()
    return f"n = {n if n is not None else NA}, seed {cell.seed}, battery {battery.name if battery else NA}"


def cell_reliability_figure(view: SweepView, cell: StoredCell, fmt: Format) -> bytes:
    calibration = cell.result(cache=False).calibration
    clean, adv = calibration.clean, calibration.adversarial
    return reliability_figure(
        clean.reliability.bins,
        adv.reliability.bins,
        clean_ece=clean.ece.value,
        adv_ece=adv.ece.value,
        title=f"{cell.label} (cell {cell.key}): {view.threat_text()}, {cell_measured_text(cell)}",
        fmt=fmt,
    )


@dataclass(frozen=True)
class FigureSpec:
    stem: str
    caption: str
    draw: Callable[[Format], bytes]
    section: str = "robustness"  # the report section it belongs to: robustness | calibration | reliability | eps_curve


def _caption(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def figure_specs(view: SweepView, reliability: Sequence[str] | None = None) -> list[FigureSpec]:
    """Every figure of the report with its caption; each caption states n, the seeds, the battery and the intervals
    its figure draws."""
    measured = f"Measured on {measured_text(view)}."
    specs = [
        FigureSpec(
            "robust_worst",
            _caption(
                "Robust accuracy (per-example worst case over the battery) vs target sparsity; dashed: clean accuracy.",
                accuracy_uncertainty(view, None).caption("robust accuracy"),
                measured,
            ),
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
                _caption(
                    f"Robust accuracy after {label} and every attack before it (cumulative) vs "
                    "target sparsity; dashed: clean accuracy.",
                    accuracy_uncertainty(view, label).caption("robust accuracy"),
                    measured,
                ),
                lambda fmt, label=label: accuracy_figure(view, label, fmt),
            )
        )
    specs.append(
        FigureSpec(
            "calibration",
            _caption(
                "ECE and NLL vs target sparsity, clean and under the worst-case attack (y axes from zero).",
                calibration_uncertainty(view).caption("ECE or NLL"),
                measured,
            ),
            lambda fmt: calibration_figure(view, fmt),
            "calibration",
        )
    )
    for cell in reliability_cells(view, reliability):
        stem = f"reliability_{slug(cell.recipe)}_{cell.key}"
        specs.append(
            FigureSpec(
                stem,
                f"Reliability diagrams of {cell.label} (cell {cell.key}): clean | under the worst-case attack; "
                f"empty bins are not drawn, counts per bin below. Measured on {cell_measured_text(cell)}.",
                lambda fmt, cell=cell: cell_reliability_figure(view, cell, fmt),
                "reliability",
            )
        )
    return specs
