"""Battery specs: every shipped battery loads and builds; bad files fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustprune.attacks import load_battery
from robustprune.attacks.battery import build_attacks
from robustprune.config import BUILTIN_DIR, ThreatModel, canonical_key, read_battery
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
