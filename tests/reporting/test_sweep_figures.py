"""What the sweep figures draw and say: Wilson bars for one seed, the t band over several, legends and captions
that name only what is drawn (with n, seeds and battery), calibration axes from zero."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from scipy import stats
from sweep_factory import make_sweep

from robustprune.metrics.accuracy import wilson_pct
from robustprune.metrics.seeds import mean_band
from robustprune.render import figures as render_figures
from robustprune.reporting import sweep_figures
from robustprune.reporting.view import ACC_BOUNDS, SweepView, make_view
from robustprune.results.store import StoredCell, StoredSweep, load_sweep

N = 40  # sweep_factory's examples per cell


@pytest.fixture(scope="module")
def view(tmp_path_factory) -> SweepView:
    """dense and magnitude on seeds 0 and 1; pgd_at and pgd_at_agp on seed 0 only."""
    root = tmp_path_factory.mktemp("sweep")
    make_sweep(root)
    return make_view(load_sweep(root))


def subview(view: SweepView, keep) -> SweepView:
    cells = [c for c in view.cells if keep(c)]
    return make_view(StoredSweep(view.sweep.root, view.sweep.spec, cells, True))


@pytest.fixture(scope="module")
def one_seed(view: SweepView) -> SweepView:
    return subview(view, lambda c: c.seed == 0)


@pytest.fixture(scope="module")
def several_seeds(view: SweepView) -> SweepView:
    return subview(view, lambda c: c.recipe in ("dense", "magnitude"))


@pytest.fixture
def capture(monkeypatch) -> list[Figure]:
    """Every figure drawn (sweep figures and reliability diagrams), drawn on an Agg canvas and kept."""
    kept: list[Figure] = []

    def fake_render(draw, size, fmt):
        with matplotlib.style.context("default"), matplotlib.rc_context(render_figures._RC):
            fig = Figure(figsize=size, dpi=render_figures.DPI, layout="constrained")
            FigureCanvasAgg(fig)
            draw(fig)
            fig.canvas.draw()
        kept.append(fig)
        return b""

    monkeypatch.setattr(sweep_figures, "render_figure", fake_render)
    monkeypatch.setattr(render_figures, "render_figure", fake_render)
    return kept


def gids(fig: Figure, prefix: str) -> dict[str, object]:
    return {a.get_gid(): a for a in fig.findobj(lambda a: str(a.get_gid() or "").startswith(prefix))}


def all_gids(fig: Figure) -> set[str]:
    return {str(a.get_gid()) for a in fig.findobj(lambda a: a.get_gid() is not None)}


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def titles(fig: Figure) -> str:
    parts = [ax.get_title() for ax in fig.axes]
    if fig._suptitle is not None:
        parts.append(fig._suptitle.get_text())
    return "\n".join(parts)


def robust(view: SweepView, recipe: str, sparsity: float, seed: int = 0) -> float:
    return next(
        c.record.robust_acc
        for c in view.cells
        if (c.recipe, c.sparsity, c.seed) == (recipe, sparsity, seed) and c.record.robust_acc is not None
    )


def scipy_wilson(accuracy_pct: float, n: int) -> tuple[float, float]:
    ci = stats.binomtest(round(accuracy_pct * n / 100), n).proportion_ci(method="wilson")
    return 100 * ci.low, 100 * ci.high


def bar_segments(collection: LineCollection) -> list[tuple[float, float, float]]:
    return sorted(
        (float(s[0][0]), float(min(s[0][1], s[1][1])), float(max(s[0][1], s[1][1]))) for s in collection.get_segments()
    )


# ---------------------------------------------------------------- accuracy figures


def test_one_seed_gets_wilson_bars_from_the_cells_n_and_no_band(one_seed, capture):
    sweep_figures.accuracy_figure(one_seed, None, "svg")
    fig = capture[0]
    bars = gids(fig, "wilson_bars_")
    assert set(bars) == {f"wilson_bars_{r}" for r in ("dense", "magnitude", "pgd_at", "pgd_at_agp")}
    assert not gids(fig, "t_band_")
    for (x, lo, hi), sparsity in zip(bar_segments(bars["wilson_bars_magnitude"]), (0.5, 0.9)):
        expected = scipy_wilson(robust(one_seed, "magnitude", sparsity), N)
        assert x == 100 * sparsity and (lo, hi) == pytest.approx(expected)
        assert hi - lo > 20  # 40 examples: about +-12 points, which the figure must show
    ((x, lo, hi),) = bar_segments(bars["wilson_bars_dense"])  # the dense reference line gets its bar at x = 0
    assert x == 0 and (lo, hi) == pytest.approx(scipy_wilson(robust(one_seed, "dense", 0.0), N))
    legend = legend_texts(fig)
    assert f"bars: 95 % Wilson interval (one seed), n = {N}" in legend and "robust (one seed)" in legend
    assert not [t for t in legend if "t interval" in t or "band" in t or "mean over seeds" in t]


def test_several_seeds_keep_the_t_band_and_get_no_bars(several_seeds, capture):
    sweep_figures.accuracy_figure(several_seeds, None, "svg")
    fig = capture[0]
    assert not gids(fig, "wilson_bars_")
    bands = gids(fig, "t_band_")
    assert set(bands) == {"t_band_dense", "t_band_magnitude"}
    values = [c.record.robust_acc for c in several_seeds.cells if c.recipe == "magnitude" and c.sparsity == 0.9]
    _, lo, hi = mean_band(values, bounds=ACC_BOUNDS)
    vertices = bands["t_band_magnitude"].get_paths()[0].vertices
    ys = [float(y) for x, y in vertices if x == 100 * 0.9]
    assert min(ys) == pytest.approx(lo) and max(ys) == pytest.approx(hi) and hi - lo > 1
    legend = legend_texts(fig)
    assert sweep_figures.BAND_TEXT in legend and "robust (mean over seeds)" in legend
    assert not [t for t in legend if "Wilson" in t or "bars" in t]


def test_a_mixed_sweep_draws_and_names_both(view, capture):
    sweep_figures.accuracy_figure(view, "pgd", "png")
    fig = capture[0]
    assert set(gids(fig, "wilson_bars_")) == {"wilson_bars_pgd_at", "wilson_bars_pgd_at_agp"}
    assert set(gids(fig, "t_band_")) == {"t_band_dense", "t_band_magnitude"}
    legend = legend_texts(fig)
    assert sweep_figures.BAND_TEXT in legend and f"bars: 95 % Wilson interval (one seed), n = {N}" in legend


def test_the_svg_carries_the_bars_or_the_band_and_is_deterministic(one_seed, several_seeds):
    svg = sweep_figures.accuracy_figure(one_seed, None, "svg").decode()
    assert 'id="wilson_bars_magnitude"' in svg and "t_band_" not in svg
    assert sweep_figures.accuracy_figure(one_seed, None, "svg").decode() == svg
    svg = sweep_figures.accuracy_figure(several_seeds, None, "svg").decode()
    assert 'id="t_band_magnitude"' in svg and "wilson_bars_" not in svg


def test_wilson_pct_matches_scipy_and_refuses_a_share_that_is_not_of_n():
    for k, n in ((0, 60), (7, 60), (30, 60), (60, 60), (1, 1)):
        assert wilson_pct(100 * k / n, n) == pytest.approx(scipy_wilson(100 * k / n, n), abs=1e-9)
    lo, hi = wilson_pct(50.0, 60)
    assert 11 < (hi - lo) / 2 < 13  # the +-12 points of a 60-example cell
    assert wilson_pct(50.5, 60) is None and wilson_pct(50.0, 0) is None


def test_no_bars_without_a_known_n(one_seed, capture):
    cells = [
        StoredCell(
            type(c.record).from_json(c.record.to_json() | {"config": {**c.record.to_json()["config"], "n": None}})
        )
        for c in one_seed.cells
    ]
    unknown = make_view(StoredSweep(one_seed.sweep.root, one_seed.sweep.spec, cells, True))
    sweep_figures.accuracy_figure(unknown, None, "png")
    assert not gids(capture[0], "wilson_bars_") and not gids(capture[0], "t_band_")
    assert not [t for t in legend_texts(capture[0]) if "Wilson" in t or "band" in t]
    caption = sweep_figures.accuracy_uncertainty(unknown, None).caption("robust accuracy")
    assert caption == "Points from one seed: no interval is drawn."


# ---------------------------------------------------------------- calibration


@pytest.mark.parametrize("which", ["one_seed", "several_seeds"])
def test_calibration_axes_start_at_zero(which, request, capture):
    sub = request.getfixturevalue(which)
    sweep_figures.calibration_figure(sub, "png")
    fig = capture[0]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 4
    for ax in panels:
        bottom, top = ax.get_ylim()
        highest = max(y for line in ax.lines for y in line.get_ydata())
        assert bottom == 0.0 and top >= highest > 0
    legend = legend_texts(fig)
    if which == "one_seed":
        assert not [g for g in all_gids(fig) if "band" in g or "wilson" in g]
        assert "one seed, no interval" in legend and not [t for t in legend if "band" in t or "Wilson" in t]
    else:
        assert sweep_figures.BAND_TEXT in legend and "t_band_ece_clean_magnitude" in all_gids(fig)


# ---------------------------------------------------------------- titles and captions


@pytest.mark.parametrize(
    ("which", "seeds", "uncertainty", "absent"),
    [
        ("one_seed", "1 seed (0)", "Wilson interval", "t interval"),
        ("several_seeds", "2 seeds (0, 1)", "t interval", "Wilson"),
    ],
)
def test_every_figure_states_n_seeds_and_battery(which, seeds, uncertainty, absent, request, capture):
    sub = request.getfixturevalue(which)
    specs = sweep_figures.figure_specs(sub)
    assert {s.stem for s in specs} >= {"robust_worst", "robust_after_fgsm", "robust_after_pgd", "calibration"}
    for spec in specs:
        spec.draw("png")
    for spec, fig in zip(specs, capture, strict=True):
        title = titles(fig)
        assert f"n = {N}" in spec.caption and f"n = {N}" in title, spec.stem
        assert "battery quick" in spec.caption and "battery quick" in title, spec.stem
        if spec.stem.startswith("reliability_"):
            assert re.search(r"seed \d", spec.caption) and re.search(r"seed \d", title)
            assert "empty bins are not drawn" in spec.caption
        else:
            assert seeds in spec.caption and seeds in title, spec.stem
        if spec.stem.startswith("robust_"):
            assert uncertainty in spec.caption and absent not in spec.caption, spec.stem


def test_reliability_diagrams_of_a_cell_hide_empty_bins(one_seed, capture):
    cell = sweep_figures.reliability_cells(one_seed)[0]
    sweep_figures.cell_reliability_figure(one_seed, cell, "png")
    bins = cell.result().calibration.clean.reliability.bins
    full = [b for b in bins if b.count]
    assert len(full) < len(bins), "the fixture should have empty bins"
    counts_ax = capture[0].axes[2]  # axes: clean, adversarial (top row), then the two count panels
    assert counts_ax.get_ylabel() == "count"
    assert len(counts_ax.patches) == len(full)
    assert [t.get_text() for t in counts_ax.texts] == [str(b.count) for b in full]


def test_measured_text_lists_many_seeds_briefly(view):
    cells = [
        StoredCell(type(c.record).from_json(c.record.to_json() | {"seed": seed}))
        for seed, c in enumerate(view.cells * 2)
    ]
    wide = make_view(StoredSweep(Path("."), None, cells, True))
    assert sweep_figures.seeds_text(wide) == f"{len(cells)} seeds (0 to {len(cells) - 1})"
