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


def test_built_in_batteries_take_the_dataset_default(tmp_path, capsys) -> None:
    import numpy as np

    from robustprune.cli import main
    from robustprune.config.eps import DATASET_EPS, default_eps

    assert default_eps((3, 32, 32), "Linf") == 8 / 255 and default_eps((1, 28, 28), "Linf") == 0.3
    assert default_eps((1, 8, 8), "L2") == DATASET_EPS["digits"]["L2"]
    with pytest.raises(UsageError, match="pass --eps"):
        default_eps((3, 64, 64), "Linf")
    rng = np.random.default_rng(0)
    path = tmp_path / "cifarish.npz"
    np.savez(path, x=rng.random((8, 3, 32, 32), dtype=np.float32), y=np.arange(8) % 10, num_classes=10)
    out = tmp_path / "s"
    args = ["score", "--model", "mlp", "--random-init", "--dataset", str(path), "--battery", "quick", "--n", "4"]
    assert main([*args, "--json", "--out", str(out)]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["eps"] == pytest.approx(8 / 255)
    mine = tmp_path / "mine.toml"
    mine.write_text('name = "mine"\nnorm = "Linf"\neps = 0.05\n[[attack]]\nname = "fgsm"\n')
    assert (
        main(
            [
                "score",
                "--model",
                "mlp",
                "--random-init",
                "--dataset",
                str(path),
                "--battery",
                str(mine),
                "--n",
                "4",
                "--json",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["eps"] == 0.05  # a battery of your own keeps its eps
