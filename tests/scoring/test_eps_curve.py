"""Robust accuracy vs eps from one run of minimum-norm attacks (robustprune.scoring.eps_curve): verified, monotone,
labelled upper bounds, never above the battery at its eps, deterministic, honest on randomized and gradient-free
models; the `score --eps-grid` flag, the battery's [eps_curve] table and the result field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robustprune.attacks import min_norm
from robustprune.attacks.min_norm import MinNormAttack
from robustprune.cli import main
from robustprune.errors import UsageError
from robustprune.models import build_model
from robustprune.render.text import summary_table
from robustprune.results.schema import validate_document
from robustprune.scoring import EscalationBudget, score
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
    assert curve.bound == "upper" and curve.attack == "FMN+FAB" and curve.steps == 100
    assert all(a >= b for a, b in zip(curve.robust_acc, curve.robust_acc[1:]))
    assert curve.robust_acc[0] == pytest.approx(curve.clean_acc)
    assert curve.rejected == 0 and curve.n_found == curve.n_clean_correct
    distances = curve.distance_array()
    with torch.no_grad():
        correct = (trained_mlp(data.x).argmax(dim=1) == data.y).numpy()
    assert (distances[~correct] == 0).all() and (distances[correct] > 0).all()
    assert curve.median_distance == pytest.approx(float(np.median(distances[correct])))
    assert [r.attack for r in curve.runs] == ["FMN", "FAB"]
    assert sum(r.closest for r in curve.runs) == curve.n_found
    assert "upper bounds from FMN+FAB, 100 steps" in curve.line()
    assert "median minimal perturbation" in curve.line() and "closest found by FMN" in curve.line()


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_each_example_takes_the_smallest_distance_over_the_attacks(trained_mlp, digits_test, norm):
    data = digits_test.subset(60)
    grid = [0.0, 0.05, 0.1] if norm == "Linf" else [0.0, 0.5, 1.0]
    alone = {a: min_norm_curve(trained_mlp, data, norm, grid, attacks=(a,)).distance_array() for a in ("fmn", "fab")}
    both = min_norm_curve(trained_mlp, data, norm, grid)
    np.testing.assert_allclose(both.distance_array(), np.minimum(alone["fmn"], alone["fab"]))
    for a in ("fmn", "fab"):
        single = min_norm_curve(trained_mlp, data, norm, grid, attacks=(a,))
        assert all(x <= y + 1e-9 for x, y in zip(both.robust_acc, single.robust_acc))


def _lying_attack(model, x, y, norm, steps, seed):
    """Every point moved, none honestly: the first leaves the box, the others move by 1e-4 (still correct)."""
    x_adv = (x + 1e-4).clamp(0, 1)
    x_adv[0] = x[0] - 0.5  # outside [0, 1] wherever x < 0.5
    return x_adv


def test_every_point_is_verified_and_failures_count_as_not_broken(trained_mlp, digits_test, monkeypatch):
    """A point outside the box, or one still classified correctly, is rejected and the example stays robust."""
    data = digits_test.subset(40)
    monkeypatch.setitem(min_norm.MIN_NORM_ATTACKS, "fmn", MinNormAttack("fmn", "LIAR", _lying_attack, "test"))
    curve = min_norm_curve(trained_mlp, data, "Linf", [0.0, 0.05], attacks=("fmn",), seed=0, batch_size=64)
    assert curve.rejected == curve.n_clean_correct
    assert curve.robust_acc == [pytest.approx(curve.clean_acc)] * 2
    assert curve.median_distance is None and curve.n_found == 0


def test_distances_are_measured_on_the_points_not_taken_from_the_attack(trained_mlp, digits_test, monkeypatch):
    data = digits_test.subset(40)

    def far(model, x, y, norm, steps, seed):
        return (x + 0.6 * torch.sign(0.5 - x)).clamp(0, 1)  # a big move: misclassified, far away

    monkeypatch.setitem(min_norm.MIN_NORM_ATTACKS, "fmn", MinNormAttack("fmn", "FAR", far, "test"))
    curve = min_norm_curve(trained_mlp, data, "Linf", [0.0, 0.1, 0.7], attacks=("fmn",))
    found = curve.distance_array()[np.isfinite(curve.distance_array()) & (curve.distance_array() > 0)]
    assert found.size and (found > 0.5).all()
    assert curve.robust_acc[1] == pytest.approx(curve.clean_acc)  # nothing was found within 0.1
    assert curve.robust_acc[2] < curve.clean_acc


def test_unknown_attacks_are_refused(trained_mlp, digits_test):
    with pytest.raises(UsageError, match="fmn, fab"):
        min_norm_curve(trained_mlp, digits_test.subset(5), "Linf", [0.1], attacks=("pgd",))


def test_curve_is_deterministic_per_seed(trained_mlp, digits_test):
    data = digits_test.subset(60)
    a = min_norm_curve(trained_mlp, data, "L2", [0.0, 0.5, 1.0], seed=1, batch_size=32)
    b = min_norm_curve(trained_mlp, data, "L2", [0.0, 0.5, 1.0], seed=1, batch_size=32)
    assert a.distances == b.distances and a.robust_acc == b.robust_acc


def test_score_records_the_curve_beside_the_battery(scored):
    """The battery's verified points join the curve, so at the battery's eps the curve is never above it."""
    curve = scored.eps_curve
    assert isinstance(curve, EpsCurve) and curve.grid == GRID and curve.attack == "FMN+FAB+battery"
    assert curve.robust_acc[0] == pytest.approx(scored.clean_acc)
    at_battery = curve.robust_acc[GRID.index(0.1)]
    assert at_battery <= scored.robust_acc + 1e-9
    assert at_battery >= scored.robust_acc - 15.0  # the minimum-norm attacks are no weaker than a sanity bound
    battery_run = curve.runs[-1]
    assert battery_run.attack == "battery" and battery_run.rejected == 0
    assert battery_run.n_found == len(scored.adversarial)
    document = scored.document
    validate_document(document)
    back = ScoreResult.from_json(json.loads(json.dumps(document)))
    assert back.eps_curve == curve
    assert scored.robust_acc == document["robust_acc"]  # the battery stays the headline
    assert scored.cost.seconds >= curve.seconds
    # FMN: steps + 1 forwards and steps backwards per attacked example; FAB one backward per class and step
    assert curve.n_forward >= 200 * curve.n_clean_correct and curve.n_backward >= 1000 * curve.n_clean_correct
    assert scored.cost.n_forward > curve.n_forward and scored.cost.n_backward > curve.n_backward


def test_randomized_models_are_judged_over_every_pass(digits_test, _trained_mlp_state):
    """A noisy model: correct only when correct on every pass (as the battery judges it), so the curve's clean
    point is the battery's strict clean accuracy, and the curve stays below the battery at its eps."""
    from broken_models import Noisy

    base = build_model("mlp", 10, (1, 8, 8))
    base.load_state_dict(_trained_mlp_state)
    model = Noisy(base, sigma=0.15)
    result = score(model, digits_test, "quick", eps=0.1, n=60, efficiency=False, eps_grid=[0.0, 0.1])
    curve = result.eps_curve
    assert result.randomized and curve.n_passes > 1
    assert "judged over" in curve.line()
    assert curve.clean_acc == pytest.approx(result.clean_acc) and curve.robust_acc[0] == pytest.approx(result.clean_acc)
    assert curve.robust_acc[1] <= result.robust_acc + 1e-9
    assert curve.runs[-1].attack == "battery" and curve.runs[-1].n_found == len(result.adversarial)


def test_one_wrong_pass_breaks_an_example_of_a_randomized_model(trained_mlp, digits_test):
    """Judged over several passes, a noisy model's clean accuracy can only fall and distances only shrink."""
    from broken_models import Noisy

    model, data = Noisy(trained_mlp, sigma=0.2), digits_test.subset(60)
    torch.manual_seed(0)
    one = min_norm_curve(model, data, "Linf", [0.0, 0.05], attacks=("fmn",), n_passes=1)
    torch.manual_seed(0)
    many = min_norm_curve(model, data, "Linf", [0.0, 0.05], attacks=("fmn",), n_passes=10)
    assert many.n_passes == 10 and many.clean_acc <= one.clean_acc
    assert many.robust_acc[1] <= one.robust_acc[1]


def test_gradient_free_models_get_no_curve_and_say_so(digits_test, _trained_mlp_state):
    from broken_models import Detached

    base = build_model("mlp", 10, (1, 8, 8))
    base.load_state_dict(_trained_mlp_state)
    budget = EscalationBudget(square_queries=100, steps=10, restarts=1)  # the curve is the point, not the escalations
    result = score(
        Detached(base),
        digits_test,
        "quick",
        eps=0.1,
        n=30,
        efficiency=False,
        eps_grid=[0.0, 0.1],
        escalation_budget=budget,
    )
    assert result.eps_curve is None and "no usable gradient" in result.eps_curve_skipped
    assert "NO EPS CURVE" in summary_table(result)
    validate_document(result.document)


def test_a_curve_on_a_doubtful_evaluation_carries_the_verdict(digits_test, _trained_mlp_state):
    """Shattered gradients (a quantised input): the curve is still drawn, merged with the battery's points, but
    it says loudly that the evaluation it comes from is not trusted."""
    from broken_models import Quantize

    base = build_model("mlp", 10, (1, 8, 8))
    base.load_state_dict(_trained_mlp_state)
    model = torch.nn.Sequential(Quantize(2), base)
    result = score(model, digits_test, "quick", eps=0.1, n=60, efficiency=False, eps_grid=[0.0, 0.1, 0.2])
    assert result.verdict != "trusted"
    curve = result.eps_curve
    assert curve.caveat and result.verdict in curve.caveat and curve.caveat in curve.line()
    assert curve.robust_acc[1] <= result.robust_acc + 1e-9


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
    assert "robust accuracy vs eps, Linf (upper bounds from FMN+FAB+battery, 100 steps): 0: " in stdout


@pytest.mark.parametrize("grid", ["0:0.3", "0.3:0:4", "0,-1", "a", "0:1:0"])
def test_cli_bad_grids_are_one_line_errors(mlp_checkpoint, tmp_path, capsys, grid):
    out = tmp_path / "never"
    code = main(_args(mlp_checkpoint, out, grid))
    _, stderr = capsys.readouterr()
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and "--eps-grid" in stderr
    assert not out.exists()


def test_a_battery_eps_curve_table_runs_without_the_flag_and_the_flag_replaces_its_grid(
    trained_mlp, digits_test, tmp_path
):
    battery = tmp_path / "curved.toml"
    battery.write_text(
        'eps = 0.1\n[[attack]]\nname = "pgd"\nsteps = 10\n[eps_curve]\ngrid = "0:0.2:3"\nattacks = ["fab"]\nsteps = 30\n'
    )
    result = score(trained_mlp, digits_test, str(battery), n=30, efficiency=False)
    curve = result.eps_curve
    assert curve.grid == [0.0, 0.1, 0.2] and curve.attack == "FAB+battery" and curve.steps == 30
    assert result.provenance.battery.eps_curve.attacks == ("fab",)
    flagged = score(trained_mlp, digits_test, str(battery), n=30, efficiency=False, eps_grid=[0.0, 0.05])
    assert flagged.eps_curve.grid == [0.0, 0.05] and flagged.eps_curve.attack == "FAB+battery"


def test_the_score_reports_show_the_curve_its_table_and_each_attack(scored):
    from robustprune.render.figures import document_figures
    from robustprune.render.html import render_html
    from robustprune.render.markdown import render_markdown

    markdown = render_markdown(scored)
    section = markdown[markdown.index("## Robustness vs eps") :]
    assert "upper bounds from FMN+FAB+battery" in section and "| eps " in section
    assert "| FMN " in section and "| FAB " in section and "| battery " in section
    html = render_html(scored)
    assert 'id="eps-curve"' in html and 'alt="robust accuracy vs eps"' in html
    figure = document_figures(scored, "svg")["eps_curve"].decode()
    assert "battery quick" in figure or "<svg" in figure
    assert "eps_curve" not in document_figures(
        score(
            build_model("mlp", 10, (1, 8, 8)).eval(),
            scored.document["dataset"],
            "quick",
            eps=0.1,
            n=5,
            efficiency=False,
        )
    )


@pytest.mark.parametrize(
    "table", ['grid = "0:0.3"', 'grid = "0:0.1:3"\nattacks = ["pgd"]', 'grid = "0:0.1:3"\nsteps = -1', "steps = 5"]
)
def test_cli_bad_eps_curve_tables_are_one_line_errors(mlp_checkpoint, tmp_path, capsys, table):
    battery = tmp_path / "b.toml"
    battery.write_text(f'eps = 0.1\n[[attack]]\nname = "fgsm"\n[eps_curve]\n{table}\n')
    out = tmp_path / "never"
    args = ["score", "--model", "mlp", "--checkpoint", str(mlp_checkpoint), "--battery", str(battery), "--n", "10"]
    code = main([*args, "--out", str(out)])
    _, stderr = capsys.readouterr()
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "[eps_curve]" in stderr or "grid" in stderr
    assert not out.exists()


def test_cli_json_carries_the_curve(mlp_checkpoint, tmp_path, capsys):
    code = main([*_args(mlp_checkpoint, tmp_path / "out", "0,0.1"), "--json"])
    stdout, _ = capsys.readouterr()
    summary = json.loads(stdout)
    assert code == 0 and summary["eps_curve"]["grid"] == [0.0, 0.1] and summary["eps_curve"]["bound"] == "upper"
    assert summary["eps_curve"]["robust_acc"][1] <= summary["robust_acc"] + 1e-9
    assert summary["eps_curve_skipped"] is None


def test_a_model_handed_in_train_mode_is_attacked_in_eval_mode_and_given_back_as_it_was(trained_mlp, digits_test):
    model = torch.nn.Sequential(trained_mlp, torch.nn.Dropout(0.5))
    data = digits_test.subset(30)
    reference = min_norm_curve(model.eval(), data, "Linf", [0.0, 0.1], attacks=("fmn",))
    model.train()
    again = min_norm_curve(model, data, "Linf", [0.0, 0.1], attacks=("fmn",))
    assert again.distances == reference.distances  # dropout off: deterministic, as in eval mode
    assert model.training and model[1].training and not again.n_passes > 1
