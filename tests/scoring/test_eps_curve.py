"""Robust accuracy vs eps from one FMN run (robustprune.scoring.eps_curve): verified, monotone, labelled upper
bounds, close to the battery at its eps, deterministic; the `score --eps-grid` flag and the result field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robustprune.attacks.fmn import FMNResult
from robustprune.cli import main
from robustprune.errors import UsageError
from robustprune.models import build_model, save_checkpoint
from robustprune.results.schema import validate_document
from robustprune.scoring import eps_curve as eps_curve_mod
from robustprune.scoring import score
from robustprune.scoring.eps_curve import EpsCurve, min_norm_curve, parse_eps_grid
from robustprune.scoring.result import ScoreResult

GRID = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3]


@pytest.fixture(scope="module")
def scored(_trained_mlp_state, digits_test) -> ScoreResult:
    model = build_model("mlp", 10, (1, 8, 8))
    model.load_state_dict(_trained_mlp_state)
    return score(model.eval(), digits_test, "quick", eps=0.1, n=150, batch_size=64, efficiency=False, eps_grid=GRID)


def test_curve_is_monotone_starts_at_clean_and_is_labelled_an_upper_bound(trained_mlp, digits_test):
    data = digits_test.subset(150)
    curve = min_norm_curve(trained_mlp, data, "Linf", GRID, seed=0, batch_size=64)
    assert curve.bound == "upper" and curve.attack == "FMN-Linf" and curve.steps == 100
    assert all(a >= b for a, b in zip(curve.robust_acc, curve.robust_acc[1:]))
    assert curve.robust_acc[0] == pytest.approx(curve.clean_acc)
    assert curve.rejected == 0 and curve.n_found == curve.n_clean_correct
    distances = curve.distance_array()
    with torch.no_grad():
        correct = (trained_mlp(data.x).argmax(dim=1) == data.y).numpy()
    assert (distances[~correct] == 0).all() and (distances[correct] > 0).all()
    assert curve.median_distance == pytest.approx(float(np.median(distances[correct])))
    assert "upper bounds from FMN-Linf, 100 steps" in curve.line()
    assert "median minimal perturbation" in curve.line()


def test_every_point_is_verified_and_failures_count_as_not_broken(trained_mlp, digits_test, monkeypatch):
    """An attack claiming a distance its point does not have, or a point still classified correctly, is rejected."""
    data = digits_test.subset(40)

    def lying_fmn(model, x, y, **_):
        x_adv = x.clone()
        x_adv[0] = (x[0] + 0.3).clamp(0, 1)  # claims 0.01 but lies 0.3 away (and may not even be misclassified)
        distance = torch.full((len(x),), 0.01)
        return FMNResult(x_adv=x_adv, distance=distance, found=torch.ones(len(x), dtype=torch.bool))

    monkeypatch.setattr(eps_curve_mod, "fmn", lying_fmn)
    curve = min_norm_curve(trained_mlp, data, "Linf", [0.0, 0.05], seed=0, batch_size=64)
    assert curve.rejected == curve.n_clean_correct  # the unchanged points are still correct, the moved one too far
    assert curve.robust_acc == [pytest.approx(curve.clean_acc)] * 2
    assert curve.median_distance is None and curve.n_found == 0


def test_curve_is_deterministic_per_seed(trained_mlp, digits_test):
    data = digits_test.subset(60)
    a = min_norm_curve(trained_mlp, data, "L2", [0.0, 0.5, 1.0], seed=1, batch_size=32)
    b = min_norm_curve(trained_mlp, data, "L2", [0.0, 0.5, 1.0], seed=1, batch_size=32)
    assert a.distances == b.distances and a.robust_acc == b.robust_acc


def test_score_records_the_curve_beside_the_battery(scored):
    """Both are upper bounds on the true robust accuracy, from different attacks, so no order is guaranteed; the
    one guarantee is true <= min(both). On this model FMN-Linf lands within a few points of the quick battery."""
    curve = scored.eps_curve
    assert isinstance(curve, EpsCurve) and curve.grid == GRID
    assert curve.robust_acc[0] == pytest.approx(scored.clean_acc)
    at_battery = curve.robust_acc[GRID.index(0.1)]
    assert at_battery >= scored.robust_acc - 5.0
    assert at_battery <= scored.robust_acc + 10.0
    document = scored.document
    validate_document(document)
    back = ScoreResult.from_json(json.loads(json.dumps(document)))
    assert back.eps_curve == curve
    assert scored.robust_acc == document["robust_acc"]  # the battery stays the headline


def test_score_without_a_grid_has_no_curve_and_bad_grids_are_refused(trained_mlp, digits_test):
    result = score(trained_mlp, digits_test, "quick", eps=0.1, n=20, efficiency=False)
    assert result.eps_curve is None and "eps_curve" not in result.document
    for bad in ([], [-0.1], [math.inf], ["x"]):
        with pytest.raises(UsageError, match="eps_grid"):
            score(trained_mlp, digits_test, "quick", eps=0.1, n=20, efficiency=False, eps_grid=bad)


def test_parse_eps_grid_forms():
    assert parse_eps_grid("0:0.3:16") == pytest.approx(list(np.linspace(0, 0.3, 16)))
    assert parse_eps_grid("0:0.3:16")[-1] == pytest.approx(0.3)
    assert parse_eps_grid("0,0.05,0.1") == [0.0, 0.05, 0.1]
    assert parse_eps_grid("0.1,0") == [0.0, 0.1]
    assert parse_eps_grid("0.1:0.1:1") == [0.1]
    for bad in ("", "0:0.3", "0:0.3:0", "0.3:0:4", "a,b", "0,-0.1", "0,nan", "0:inf:3", "1:2:x"):
        with pytest.raises(UsageError, match="--eps-grid"):
            parse_eps_grid(bad)


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory, _trained_mlp_state) -> Path:
    model = build_model("mlp", 10, (1, 8, 8))
    model.load_state_dict(_trained_mlp_state)
    path = tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"
    save_checkpoint(model, path)
    return path


def _args(ckpt: Path, out: Path, grid: str) -> list[str]:
    return [
        "score", "--model", "mlp", "--checkpoint", str(ckpt), "--battery", "quick", "--eps", "0.1",
        "--n", "40", "--batch-size", "20", "--out", str(out), "--eps-grid", grid,
    ]  # fmt: skip


@pytest.mark.parametrize("grid", ["0:0.2:5", "0,0.05,0.1"])
def test_cli_flag_adds_the_curve_and_its_line(mlp_checkpoint, tmp_path, capsys, grid):
    out = tmp_path / "out"
    code = main(_args(mlp_checkpoint, out, grid))
    stdout, _ = capsys.readouterr()
    assert code == 0
    document = json.loads((out / "results.json").read_text())
    validate_document(document)
    assert document["eps_curve"]["grid"] == pytest.approx(parse_eps_grid(grid))
    assert "robust accuracy vs eps (upper bounds from FMN-Linf, 100 steps): 0: " in stdout


@pytest.mark.parametrize("grid", ["0:0.3", "0.3:0:4", "0,-1", "a", "0:1:0"])
def test_cli_bad_grids_are_one_line_errors(mlp_checkpoint, tmp_path, capsys, grid):
    out = tmp_path / "never"
    code = main(_args(mlp_checkpoint, out, grid))
    _, stderr = capsys.readouterr()
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and "--eps-grid" in stderr
    assert not out.exists()
