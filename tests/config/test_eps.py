"""eps as people write it: fractions and decimals on the command line, in battery and sweep files, and in Python."""

from __future__ import annotations

import pytest

from robustprune.attacks import load_battery
from robustprune.config import sweep_spec_from_dict
from robustprune.config.eps import parse_eps
from robustprune.errors import UsageError


@pytest.mark.parametrize(
    ("text", "value"), [("8/255", 8 / 255), ("0.031", 0.031), ("3.1e-2", 0.031), (" 2 / 255 ", 2 / 255), (0.1, 0.1)]
)
def test_parse_eps_reads_fractions_and_decimals(text: object, value: float) -> None:
    assert parse_eps(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("bad", ["8/0", "abc", "-0.1", "nan", "1/2/3", True, None])
def test_parse_eps_refuses_what_is_not_an_eps(bad: object) -> None:
    with pytest.raises(UsageError):
        parse_eps(bad)


def test_fractions_reach_the_threat_model_everywhere() -> None:
    assert load_battery("quick", eps="8/255").threat.eps == 8 / 255
    spec = sweep_spec_from_dict({"recipes": ["dense"], "sparsities": [0.0], "seeds": [0], "eps": "8/255"})
    assert spec.eps == 8 / 255


def test_cli_takes_a_fraction(tmp_path, capsys) -> None:
    from robustprune.cli import main

    out = tmp_path / "score"
    args = ["score", "--model", "mlp", "--random-init", "--battery", "quick", "--n", "4", "--eps", "8/255"]
    args += ["--out", str(out)]
    assert main(args) == 0
    assert "eps = 0.0313725 (8/255)" in capsys.readouterr().out
    assert main(["score", "--model", "mlp", "--random-init", "--eps", "8/0", "--out", str(tmp_path / "x")]) == 2
    assert "divides by zero" in capsys.readouterr().err
