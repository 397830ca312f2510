"""Battery specs: every shipped battery loads and builds; bad files fail with one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from robustprune.attacks import load_battery
from robustprune.attacks.battery import build_attacks
from robustprune.config import BUILTIN_DIR, BatterySpec, ThreatModel, canonical_key, read_battery
from robustprune.errors import UsageError

BATTERIES = sorted(p.stem for p in (BUILTIN_DIR / "attacks").glob("*.toml"))


@pytest.mark.parametrize("name", BATTERIES)
@pytest.mark.parametrize("norm,eps", [("Linf", 0.03), ("L2", 0.5)])
def test_shipped_batteries_build_for_both_norms(name, norm, eps):
    battery = load_battery(name, norm=norm, eps=eps)
    attacks = build_attacks(battery, num_classes=10)
    assert attacks, f"{name} has no attack for {norm}"
    assert all(a.threat.norm == norm for a in attacks)


def test_required_batteries_exist():
    assert {"quick", "standard", "autoattack", "full"} <= set(BATTERIES)
    assert [a.name for a in load_battery("autoattack").attacks] == ["autoattack"]
    assert [a.name for a in load_battery("full").attacks][-1] == "autoattack"
    standard = [a.label for a in load_battery("standard").attacks]
    assert standard == ["apgd-ce", "apgd-t", "fab-t", "square"]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "b.toml"
    path.write_text(text)
    return str(path)


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(UsageError, match="unknown key 'epz'"):
        load_battery(write(tmp_path, 'norm = "Linf"\nepz = 0.1\n[[attack]]\nname = "fgsm"\n'))


def test_unknown_attack(tmp_path):
    path = write(tmp_path, 'eps = 0.1\n[[attack]]\nname = "pgdd"\n')
    with pytest.raises(UsageError, match="unknown attack 'pgdd' \\(did you mean pgd"):
        load_battery(path)  # refused when the battery is read, before anything could run it
    with pytest.raises(UsageError, match="unknown attack 'pgdd' \\(did you mean pgd"):
        build_attacks(read_battery(path), num_classes=10)


def test_invalid_toml_and_empty_battery(tmp_path):
    with pytest.raises(UsageError, match="not valid TOML"):
        load_battery(write(tmp_path, "eps = = 1"))
    with pytest.raises(UsageError, match="lists no attacks"):
        load_battery(write(tmp_path, "eps = 0.1\n"))


def test_duplicate_labels(tmp_path):
    with pytest.raises(UsageError, match="used twice"):
        load_battery(write(tmp_path, 'eps = 0.1\n[[attack]]\nname = "pgd"\n[[attack]]\nname = "pgd"\n'))


def test_threat_model_validation():
    assert ThreatModel(norm="L2", eps=1).eps == 1.0
    with pytest.raises(UsageError, match="unknown norm"):
        ThreatModel(norm="L3", eps=0.1)


def test_canonical_key_is_order_independent_and_pinned():
    assert canonical_key({"a": 1, "b": [1, 2]}) == canonical_key({"b": [1, 2], "a": 1})
    assert canonical_key({"a": 1}) == "015abd7f5cc57a2d"


EPS_CURVE_BATTERY = 'eps = 0.1\n[[attack]]\nname = "fgsm"\n[eps_curve]\n'


def test_eps_curve_table_reads_grid_attacks_and_steps(tmp_path):
    spec = load_battery(write(tmp_path, EPS_CURVE_BATTERY + 'grid = "0:0.2:5"\nattacks = ["fab"]\nsteps = 20\n'))
    assert spec.eps_curve is not None
    assert spec.eps_curve.grid == pytest.approx((0.0, 0.05, 0.1, 0.15, 0.2))
    assert spec.eps_curve.attacks == ("fab",) and spec.eps_curve.steps == 20
    assert BatterySpec.from_dict(spec.to_dict()) == spec  # it travels with results and sweep cells
    default = load_battery(write(tmp_path, EPS_CURVE_BATTERY + "grid = [0.1, 0.0]\n"))
    assert default.eps_curve.grid == (0.0, 0.1) and default.eps_curve.attacks == ("fmn", "fab")
    assert load_battery(write(tmp_path, 'eps = 0.1\n[[attack]]\nname = "fgsm"\n')).eps_curve is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "needs grid"),
        ('grid = "0:0.3"\n', "grid '0:0.3': expected start:stop:points"),
        ("grid = [-0.1]\n", "finite eps >= 0"),
        ('grid = "0:0.1:3"\nattacks = "fmn"\n', "attacks must be a list"),
        ('grid = "0:0.1:3"\nattacks = ["pgd"]\n', "'pgd' is not a minimum-norm attack; use some of fmn, fab"),
        ('grid = "0:0.1:3"\nattacks = ["fmn", "fmn"]\n', "lists one attack twice"),
        ('grid = "0:0.1:3"\nsteps = 0\n', "steps must be an integer"),
        ('grid = "0:0.1:3"\nrestarts = 2\n', "unknown key 'restarts'"),
    ],
)
def test_eps_curve_table_errors_name_the_file_and_key(tmp_path, body, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        load_battery(write(tmp_path, EPS_CURVE_BATTERY + body))
