"""Where battery and recipe names are looked up: the built-ins shipped in the package, from any directory; a user's
directory only when given (--battery-dir / --recipe-dir, $ROBUSTPRUNE_BATTERIES / $ROBUSTPRUNE_RECIPES), first, and
then said and recorded; never ./attacks or ./defenses."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from robustprune.cli import main
from robustprune.config import (
    BUILTIN_DIR,
    battery_dirs,
    find_battery,
    given_spec_dirs,
    read_battery,
    spec_source,
)
from robustprune.defenses.base import load_recipe
from robustprune.errors import UsageError

MY_QUICK = 'name = "my-quick"\nnorm = "Linf"\neps = 0.05\n[[attack]]\nname = "fgsm"\n'


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory, holding ./attacks/quick.toml and ./defenses/dense.toml that must never be used."""
    for var in ("ROBUSTPRUNE_BATTERIES", "ROBUSTPRUNE_RECIPES"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "quick.toml").write_text(MY_QUICK.replace("my-quick", "decoy"), encoding="utf-8")
    (tmp_path / "attacks" / "only-here.toml").write_text(MY_QUICK, encoding="utf-8")
    (tmp_path / "defenses").mkdir()
    (tmp_path / "defenses" / "dense.toml").write_text('name = "decoy"\ndefense = "standard"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path.resolve()


def test_built_ins_are_found_from_any_directory_and_the_current_one_is_ignored(elsewhere: Path) -> None:
    assert find_battery("quick") == BUILTIN_DIR / "attacks" / "quick.toml"
    battery = read_battery("quick")
    assert battery.name == "quick" and battery.source == "builtin:quick"
    recipe = load_recipe("dense")
    assert recipe.name == "dense" and recipe.source == "builtin:dense"
    assert battery_dirs() == [BUILTIN_DIR / "attacks"]
    with pytest.raises(UsageError, match="unknown battery 'only-here'"):
        read_battery("only-here")
    # Named by path, a file anywhere is used, and recorded by its absolute path.
    mine = read_battery("attacks/quick.toml")
    assert mine.name == "decoy" and mine.source == str(elsewhere / "attacks" / "quick.toml")
    assert load_recipe("./defenses/dense.toml").source == str(elsewhere / "defenses" / "dense.toml")


def test_a_given_directory_comes_first_says_so_and_is_recorded(elsewhere: Path, caplog) -> None:
    mine = elsewhere / "mine"
    mine.mkdir()
    (mine / "quick.toml").write_text(MY_QUICK, encoding="utf-8")
    (mine / "dense.toml").write_text('name = "my-dense"\ndefense = "standard"\n', encoding="utf-8")
    with given_spec_dirs(attacks=[mine], defenses=[str(mine)]), caplog.at_level(logging.WARNING, "robustprune"):
        battery = read_battery("quick")
        assert battery.name == "my-quick" and battery.source == str(mine / "quick.toml")
        assert "not the built-in one" in caplog.text and str(mine / "quick.toml") in caplog.text
        assert read_battery("builtin:quick").source == "builtin:quick"  # the shipped one, named explicitly
        assert read_battery("fast").source == "builtin:fast"  # what the user directory lacks
        assert load_recipe("dense").source == str(mine / "dense.toml")
        assert load_recipe("builtin:dense").name == "dense"
    assert read_battery("quick").source == "builtin:quick"  # given for the block only


def test_environment_directories_come_after_given_ones(
    elsewhere: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir, given = tmp_path_factory.mktemp("env"), tmp_path_factory.mktemp("given")
    (env_dir / "quick.toml").write_text(MY_QUICK.replace("my-quick", "from-env"), encoding="utf-8")
    (given / "quick.toml").write_text(MY_QUICK.replace("my-quick", "from-flag"), encoding="utf-8")
    monkeypatch.setenv("ROBUSTPRUNE_BATTERIES", f"{env_dir}{os.pathsep}/no/such/dir")
    assert read_battery("quick").name == "from-env"
    with given_spec_dirs(attacks=[given]):
        assert read_battery("quick").name == "from-flag"
        assert battery_dirs() == [given.resolve(), env_dir.resolve(), BUILTIN_DIR / "attacks"]


def test_bad_names_and_directories_are_one_line_errors(elsewhere: Path) -> None:
    with pytest.raises(UsageError, match="battery directory nope does not exist"), given_spec_dirs(attacks=["nope"]):
        pass
    with pytest.raises(UsageError, match=r"unknown built-in battery 'builtin:nope': use one of builtin:autoattack"):
        read_battery("builtin:nope")
    with pytest.raises(UsageError, match="unknown built-in recipe"):
        load_recipe("builtin:../attacks/quick")
    assert spec_source(BUILTIN_DIR / "defenses" / "pgd_at.toml") == "builtin:pgd_at"


def test_cli_options(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = elsewhere / "mine"
    mine.mkdir()
    (mine / "quick.toml").write_text(MY_QUICK, encoding="utf-8")
    (mine / "extra.toml").write_text(MY_QUICK, encoding="utf-8")
    assert main(["ls"]) == 0
    plain = capsys.readouterr().out
    assert "decoy" not in plain and "only-here" not in plain and "from " not in plain
    assert main(["ls", "--battery-dir", "mine", "--recipe-dir", "mine"]) == 0
    out = capsys.readouterr().out
    assert f"from {mine}: extra, quick (shadows builtin:quick)" in out
    assert main(["ls", "--recipe-dir", "missing"]) == 2
    assert "recipe directory missing does not exist" in capsys.readouterr().err
    for command in (["score", "--model", "mlp"], ["sweep", "--out", "x"], ["demo"]):
        assert main([*command, "--battery-dir", "missing"]) == 2
        assert "battery directory missing does not exist" in capsys.readouterr().err
    for command in (["train", "--recipe", "dense"], ["sweep", "--out", "x"]):
        assert main([*command, "--recipe-dir", "missing"]) == 2
        assert "recipe directory missing does not exist" in capsys.readouterr().err
    assert not (elsewhere / "x").exists() and not (elsewhere / "reports").exists()


def test_sweep_cells_carry_the_recipe_file_the_plan_resolved(elsewhere: Path) -> None:
    """Workers (other processes, other nodes) load the planned file itself: they are given no directories."""
    from robustprune.config import SweepSpec
    from robustprune.sweep.plan import plan_cells

    mine = elsewhere / "mine"
    mine.mkdir()
    (mine / "mine.toml").write_text('defense = "standard"\n[train]\nepochs = 1\n', encoding="utf-8")
    with given_spec_dirs(defenses=[mine]):
        cells = plan_cells(SweepSpec(recipes=("mine",), battery="quick", n=8))
    assert [c.recipe for c in cells] == ["mine"]
    assert cells[0].recipe_source == str(mine / "mine.toml")
    assert load_recipe(cells[0].recipe_source).train.epochs == 1  # outside the block: by path
    with pytest.raises(UsageError, match="unknown recipe 'mine'"):
        load_recipe("mine")
