"""The sweep report's robust accuracy vs eps per sparsity (upper bounds from the minimum-norm attacks): table,
figure per recipe, median minimal perturbation vs sparsity; and the sweep's eps_grid option."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import sweep_factory
from sweep_factory import CellPlan, make_sweep

from robustprune.config import SweepSpec
from robustprune.errors import UsageError
from robustprune.reporting import sweep_report as sr
from robustprune.reporting.sweep_eps_curves import eps_curve_table
from robustprune.reporting.view import make_view
from robustprune.results import CellConfig, CellRecord
from robustprune.results.store import load_sweep
from robustprune.scoring import score

GRID = [0.0, 0.05, 0.1, 0.2]
PLAN = (
    CellPlan("dense", 0.0, 0),
    CellPlan("dense", 0.0, 1),
    CellPlan("magnitude", 0.9, 0, parent=("dense", 0.0)),
)


@pytest.fixture(scope="module")
def curved_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_factory, "score", functools.partial(score, eps_grid=GRID, efficiency=False))
        make_sweep(root, PLAN)
    return root


def test_cells_record_their_curve_and_the_report_shows_it_per_sparsity(curved_sweep):
    view = make_view(load_sweep(curved_sweep))
    for cell in view.cells:
        assert cell.record.eps_curve_grid == GRID and cell.record.eps_curve_attack == "FMN+FAB+battery"
        assert cell.record.eps_curve_acc[0] == pytest.approx(cell.record.clean_acc)
    table = eps_curve_table(view)
    assert table is not None
    assert table.headers[3:-1] == ("eps 0", "eps 0.05", "eps 0.1", "eps 0.2")
    assert table.headers[-1] == "median min. perturbation"
    rows = {(r[0], r[1]): r for r in table.rows}
    assert set(rows) == {("dense", "0"), ("magnitude", "0.9")}
    dense = [c.record.eps_curve_acc for c in view.cells if c.recipe == "dense"]
    assert rows[("dense", "0")][2] == "2"
    assert float(rows[("dense", "0")][3]) == pytest.approx((dense[0][0] + dense[1][0]) / 2, abs=0.05)
    paths = sr.build_sweep_report(curved_sweep)
    markdown = Path(paths["markdown"]).read_text()
    assert "## Robust accuracy vs eps (upper bounds from FMN+FAB+battery)" in markdown
    assert "![Robust accuracy vs eps, one panel per recipe" in markdown
    assert "(figures/robust_vs_eps.png)" in markdown and "(figures/median_min_perturbation.png)" in markdown
    html = Path(paths["html"]).read_text()
    assert 'id="eps-curve"' in html
    section = html[html.index('id="eps-curve"') : html.index('id="efficiency"')]
    assert section.count("<figure>") == 2


def test_the_eps_figures_draw_one_curve_per_sparsity_with_the_intervals_they_name(curved_sweep):
    """dense at 0 has two seeds (a t band), magnitude at 0.9 one (a Wilson band from its n); the captions say so
    and state n, seeds and battery."""
    paths = sr.build_sweep_report(curved_sweep)
    svg = Path(paths["figures/robust_vs_eps.svg"]).read_text()
    assert 'id="t_band_dense_0"' in svg and 'id="wilson_band_magnitude_0.9"' in svg
    assert "wilson_band_dense" not in svg and "t_band_magnitude" not in svg
    report = sr.prepare_report(curved_sweep)
    captions = {f.stem: f.caption for f in report.figures if f.section == "eps_curve"}
    assert set(captions) == {"robust_vs_eps", "median_min_perturbation"}
    eps_caption = captions["robust_vs_eps"]
    assert "upper bounds from FMN+FAB+battery" in eps_caption
    assert "Wilson" in eps_caption and "t interval" in eps_caption and "n = " in eps_caption
    assert "2 seeds (0, 1)" in eps_caption and "battery quick" in eps_caption
    median_svg = Path(paths["figures/median_min_perturbation.svg"]).read_text()
    assert 'id="median_dense' in median_svg or "median_dense" in median_svg
    assert "y from zero" in captions["median_min_perturbation"]


def test_a_sweep_without_a_grid_has_no_curve_section(tmp_path):
    make_sweep(tmp_path, (CellPlan("dense", 0.0, 0),))
    view = make_view(load_sweep(tmp_path))
    assert eps_curve_table(view) is None
    record = json.loads(next(tmp_path.glob("cells/*/cell.json")).read_text())
    assert "eps_curve_grid" not in record and "eps_grid" not in record["config"]
    markdown = Path(sr.build_sweep_report(tmp_path)["markdown"]).read_text()
    assert "Robust accuracy vs eps" not in markdown
    assert not any("eps" in f.stem for f in sr.prepare_report(tmp_path).figures)


def test_sweep_spec_eps_grid_forms_and_errors():
    assert SweepSpec(recipes=("dense",), eps_grid="0:0.2:3").eps_grid == (0.0, 0.1, 0.2)
    assert SweepSpec(recipes=("dense",), eps_grid=[0.1, 0]).eps_grid == (0.0, 0.1)
    assert "eps_grid" not in SweepSpec(recipes=("dense",)).to_dict()
    assert SweepSpec(recipes=("dense",), eps_grid=[0.1]).to_dict()["eps_grid"] == (0.1,)
    for bad in ("0:1", [-1.0], []):
        with pytest.raises(UsageError, match="eps.grid"):
            SweepSpec(recipes=("dense",), eps_grid=bad)


def test_cell_keys_are_unchanged_without_a_grid():
    config = CellConfig(dataset="digits", n=10, seed=0)
    assert "eps_grid" not in config.to_json()
    assert CellConfig(dataset="digits", eps_grid=[0.0, 0.1]).to_json()["eps_grid"] == [0.0, 0.1]
    assert CellRecord.__dataclass_fields__["eps_curve_acc"].default is None
