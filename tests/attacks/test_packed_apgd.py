"""The packed APGD engine and the attacks on it: AutoAttack's schedule, early stopping that changes no verdict,
re-packing that spends nothing on the broken, MALT target order, the ODI top-up and the Square sentinel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from broken_models import Quantize
from torch import nn

from robustprune.attacks import run_battery
from robustprune.attacks.fast_apgd import ranked_targets
from robustprune.attacks.odi_apgd import odi_starts
from robustprune.attacks.packed_apgd import Schedule, run_packed_apgd
from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.errors import UsageError

THREAT = ThreatModel(norm="Linf", eps=0.1)


def battery(*specs: AttackSpec, threat: ThreatModel = THREAT) -> BatterySpec:
    return BatterySpec(name="t", threat=threat, attacks=specs)


def test_schedule_has_autoattacks_checkpoints():
    # AutoAttack for 100 steps: first checkpoint after 22, each next interval 3 shorter, never below 6
    s = Schedule(100)
    assert (s.first, s.decrease, s.minimum) == (22, 3, 6)
    s = Schedule(10)
    assert (s.first, s.decrease, s.minimum) == (2, 1, 1)


@pytest.mark.parametrize("name, params", [("fast_apgd", {}), ("fast_apgd_t", {"n_targets": 2, "steps": 30})])
@pytest.mark.parametrize("norm, eps", [("Linf", 0.1), ("L2", 0.4)])
def test_early_stopping_changes_no_verdict_and_saves_passes(trained_mlp, digits_test, name, params, norm, eps):
    data = digits_test.subset(100)
    threat = ThreatModel(norm=norm, eps=eps)
    runs = {}
    for early in (True, False):
        spec = AttackSpec(name=name, label="a", params=params | {"early_stop": early})
        runs[early] = run_battery(
            trained_mlp, data.x, data.y, battery(spec, threat=threat), num_classes=10, seed=3, batch_size=32
        )
    assert 0 < runs[True].records[0].n_broken < runs[True].records[0].n_attempted  # the test can tell
    assert np.array_equal(runs[True].broken, runs[False].broken)
    # stopping each example when it breaks, and refilling the batch, spends fewer passes for the same verdicts
    assert runs[True].records[0].n_forward < runs[False].records[0].n_forward


def test_a_broken_example_takes_no_further_step(trained_mlp, digits_test):
    data = digits_test.subset(64)
    jobs = [(row, -1, 0, 0) for row in range(len(data.x))]
    result = run_packed_apgd(
        trained_mlp, data.x, data.y, jobs, norm="Linf", eps=0.1, steps=50, loss="ce", seed=0, batch_size=16
    )
    with torch.no_grad():
        wrong = (trained_mlp(result.x_adv).argmax(dim=1) != data.y).numpy()
    assert np.array_equal(wrong, result.found)
    # broken examples left early, the others ran all 50 steps
    assert (result.steps_taken[~result.found] == 50).all()
    assert (result.steps_taken[result.found] < 50).all()
    delta = (result.x_adv - data.x).abs().flatten(1).amax(dim=1)
    assert (delta <= 0.1 + 1e-6).all() and result.x_adv.min() >= 0 and result.x_adv.max() <= 1


def test_batch_size_does_not_change_results(trained_mlp, digits_test):
    data = digits_test.subset(48)
    jobs = [(row, -1, 0, 0) for row in range(len(data.x))]
    runs = [
        run_packed_apgd(
            trained_mlp, data.x, data.y, jobs, norm="Linf", eps=0.1, steps=20, loss="dlr", seed=1, batch_size=b
        )
        for b in (7, 48)
    ]
    assert np.array_equal(runs[0].found, runs[1].found)


def test_malt_orders_targets_by_linear_distance_not_by_logit():
    # A linear model at x = 0: class 0 is the label; class 1 has the higher logit but a steep boundary far away in
    # Linf (its gradient difference is small), class 2 a lower logit but a gradient difference 100 times larger.
    model = nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0] * 4, [0.01] * 4, [1.0] * 4, [0.0] * 4]))
        model.bias.copy_(torch.tensor([5.0, 4.0, 3.0, -10.0]))
    x, y = torch.zeros(1, 4), torch.tensor([0])
    by_logit = ranked_targets(model, x, y, 2, 8, by="logits", norm="Linf")
    by_malt = ranked_targets(model, x, y, 2, 8, by="malt", norm="Linf")
    assert by_logit.tolist() == [[1, 2]]
    # distance to class 1: 1 / 0.04 = 25; to class 2: 2 / 4 = 0.5
    assert by_malt.tolist() == [[2, 1]]


def test_odi_starts_stay_in_the_ball(trained_mlp, digits_test):
    x, y = digits_test.x[:8], digits_test.y[:8]
    generators = [torch.Generator().manual_seed(i) for i in range(8)]
    start = odi_starts(trained_mlp, "Linf", 0.1, 2)(x, y, generators)
    assert (start - x).abs().max() <= 0.1 + 1e-6 and start.min() >= 0 and start.max() <= 1
    assert not torch.equal(start, x)


def test_odi_top_up_attacks_the_closest_fraction(trained_mlp, digits_test):
    data = digits_test.subset(80)
    spec = AttackSpec(name="odi_apgd", label="odi", params={"fraction": 0.5, "probe_steps": 2, "steps": 5})
    out = run_battery(trained_mlp, data.x, data.y, battery(spec), num_classes=10, seed=0)
    notes = out.records[0].description["notes"]
    assert any(n.startswith("top-up on the") for n in notes), notes


def test_square_sentinel_fires_on_masked_gradients(trained_mlp, digits_test):
    # rounding the input hides the gradient from APGD; Square does not need it
    model = nn.Sequential(Quantize(4), trained_mlp).eval()
    data = digits_test.subset(40)
    specs = (
        AttackSpec(name="fast_apgd", label="apgd", params={"steps": 10}),
        AttackSpec(
            name="square_sentinel", label="sentinel", params={"min_size": 3, "n_queries": 300, "full_queries": 300}
        ),
    )
    out = run_battery(
        model, data.x, data.y, battery(*specs, threat=ThreatModel(norm="Linf", eps=0.2)), num_classes=10, seed=0
    )
    sentinel = out.records[1]
    assert sentinel.n_broken > 3  # more than its sample: it fired and ran on every survivor
    assert any("fired" in n for n in sentinel.description["notes"])


@pytest.mark.parametrize("params", [{"fraction": 0.0}, {"fraction": 1.5}, {"steps": 0}, {"target_order": "random"}])
def test_bad_settings_are_refused(params):
    name = "fast_apgd_t" if "target_order" in params else ("odi_apgd" if "fraction" in params else "fast_apgd")
    with pytest.raises(UsageError):
        from robustprune.attacks.battery import check_battery

        check_battery(battery(AttackSpec(name=name, params=params)), 10)
