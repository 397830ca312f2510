"""User code on the command line: factories, forward passes, module imports and attacks that raise or exit end as
one line with exit 2 (unusable from the start) or 1 (failed during the run), never a traceback, an `internal
error` or a silent exit 0, and leave nothing written."""

from __future__ import annotations

import pytest

from robustprune.cli import main

MODELS = """
import sys
import torch
from torch import nn
from robustprune.models import build_model

def exits(num_classes, input_shape):
    sys.exit(0)

def exits_3(num_classes, input_shape):
    sys.exit(3)

def raises(num_classes, input_shape):
    raise RuntimeError("factory boom")

class Fails(nn.Module):
    def __init__(self, inner, when, exc):
        super().__init__()
        self.inner, self.when, self.exc, self.calls = inner, when, exc, 0

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.when:
            raise self.exc
        return self.inner(x)

def exits_in_forward(num_classes, input_shape):
    return Fails(build_model("mlp", num_classes, input_shape), 1, SystemExit(0))

def fails_later(num_classes, input_shape):  # after the model contract's three calls
    return Fails(build_model("mlp", num_classes, input_shape), 4, RuntimeError("late boom"))

def takes(num_classes, input_shape, name="x", clip=1.0):
    return build_model("mlp", num_classes, input_shape)

def seeded(num_classes, input_shape):
    torch.manual_seed(0)  # the same weights in every process: some examples are classified right
    return build_model("mlp", num_classes, input_shape)
"""

ATTACKS = """
from robustprune.attacks.base import Attack

class Raises(Attack):
    defaults = {}
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        raise ValueError("attack boom")
"""


@pytest.fixture
def models(user_module) -> str:
    return user_module(MODELS, "cli_user_models")


def score(tmp_path, model: str, *extra: str) -> list[str]:
    return ["score", "--model", model, "--battery", "quick", "--n", "8", "--out", str(tmp_path / "out"), *extra]


@pytest.mark.parametrize(
    ("factory", "code", "message"),
    [
        ("exits", 2, "the model factory --model {m}:exits called sys.exit(0); fix the factory"),
        ("exits_3", 2, "the model factory --model {m}:exits_3 called sys.exit(3); fix the factory"),
        ("raises", 2, "the model factory --model {m}:raises raised RuntimeError('factory boom')"),
        ("exits_in_forward", 2, "the model called sys.exit(0) on its 1st call (model contract, batch of 8)"),
        ("fails_later", 1, "the model raised RuntimeError('late boom') on its "),
    ],
)
def test_user_model_code_that_raises_or_exits_is_one_line(factory, code, message, models, tmp_path, capsys):
    assert main(score(tmp_path, f"{models}:{factory}", "--random-init")) == code
    err = capsys.readouterr().err
    assert message.format(m=models) in err and err.count("\n") == 1 and "Traceback" not in err
    assert "internal error" not in err
    assert not (tmp_path / "out").exists()


def test_a_module_that_exits_at_import_is_one_line(user_module, tmp_path, capsys):
    name = user_module("import sys\nsys.exit(0)\n", "exits_at_import")
    assert main(score(tmp_path, f"{name}:f")) == 2
    err = capsys.readouterr().err
    assert f"cannot import '{name}' for --model {name}:f: its import called sys.exit(0)" in err


def test_a_user_attack_that_raises_is_exit_1_naming_it(user_module, models, tmp_path, capsys):
    attacks = user_module(ATTACKS, "cli_user_attacks")
    battery = tmp_path / "b.toml"
    battery.write_text(f'name = "b"\nnorm = "Linf"\neps = 0.1\n\n[[attack]]\nname = "{attacks}:Raises"\n')
    args = ["score", "--model", f"{models}:seeded", "--battery", str(battery), "--n", "50", "--allow-imports"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "raised ValueError('attack boom') (battery, attack " in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("arg", "code", "message"),
    [
        ("num_classes=10", 0, ""),
        ("input_shape=[1, 8, 8]", 0, ""),
        ("name=foo", 0, ""),
        ("clip=nan", 0, ""),
        ("clip=inf", 0, ""),
        ("num_classes=5", 2, "--model-arg num_classes=5 contradicts the data (num_classes 10)"),
        ("input_shape=[3, 32, 32]", 2, "--model-arg input_shape=[3, 32, 32] contradicts the data"),
    ],
)
def test_model_args_the_data_also_decides_are_checked_not_doubled(arg, code, message, models, tmp_path, capsys):
    assert main([*score(tmp_path, f"{models}:takes", "--random-init"), "--model-arg", arg, "--quiet"]) == code
    err = capsys.readouterr().err
    assert message in err and "internal error" not in err
