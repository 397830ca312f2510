"""Every registered attack, on a tiny trained model: what it returns is inside the threat model (the engine
verifies it) and a seed fixes every per-sample result. Adding an attack adds it here by itself."""

from __future__ import annotations

import numpy as np
import pytest

from robustprune.attacks import ATTACKS, run_battery
from robustprune.config import AttackSpec, BatterySpec, ThreatModel

NAMES = sorted(n for n in ATTACKS.names() if not n.startswith("test_"))
CHEAP = {"steps": 5, "n_queries": 60, "eot_iter": 2}


def cases() -> list[tuple[str, str]]:
    return [(name, norm) for name in NAMES for norm in ATTACKS.get(name).norms]


@pytest.mark.parametrize(("name", "norm"), cases())
def test_attack_output_is_verified_and_seeded(name, norm, trained_mlp, digits_test):
    cls = ATTACKS.get(name)
    eps = {"Linf": 0.1, "L2": 1.0}[norm]
    if name == "autoattack":
        eps *= 3  # a fixed budget: a wide eps ends it after APGD-CE (the rest skips when nothing survives)
    params = {k: v for k, v in CHEAP.items() if k in cls.defaults}
    battery = BatterySpec(
        name="one", threat=ThreatModel(norm=norm, eps=eps), attacks=(AttackSpec(name=name, params=params),)
    )
    data = digits_test.subset(12)
    # transfer attacks craft on a parent: the model itself stands in for one; replay replays given points
    points = {i: (data.x[i] + eps / 100 * (-1) ** i).clamp(0, 1) for i in range(0, len(data), 2)}
    runs = [
        run_battery(
            trained_mlp,
            data.x,
            data.y,
            battery,
            num_classes=10,
            seed=3,
            batch_size=6,
            parent=trained_mlp,
            points=points,
        )
        for _ in range(2)
    ]
    first, second = (r.columns[name] for r in runs)
    assert first.attempted.any(), "the attack ran on nothing: the check would be vacuous"
    norms = first.norm[first.attempted]
    assert np.all(norms <= eps + 1e-6)  # run_battery raised already if any example left the ball or the box
    for field in ("attempted", "broken", "adv_pred"):
        assert np.array_equal(getattr(first, field), getattr(second, field)), field
    assert np.array_equal(first.norm, second.norm, equal_nan=True)
