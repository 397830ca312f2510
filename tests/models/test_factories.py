"""Models as people write them: a factory gets only the arguments its signature names, so zero-argument factories,
torchvision-style `resnet18(num_classes=10)` and nn.Module classes work; `--model-arg` passes more."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustprune.errors import UsageError
from robustprune.models import build_model

USER_MODELS = """
from torch import nn

def cnn():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

def resnetish(num_classes=1000, width=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))

def legacy(n, shape):  # the positional (num_classes, input_shape) convention
    return nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], n))

def shaped(input_shape, **options):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[1] * input_shape[2], 10))

class Net(nn.Module):
    def __init__(self, num_classes: int, hidden: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.body(x)
"""


@pytest.fixture
def user_models(user_module) -> str:
    return user_module(USER_MODELS, "user_models")


def _outputs(model: torch.nn.Module) -> int:
    return model(torch.zeros(2, 1, 8, 8)).shape[1]


def test_factories_get_the_arguments_their_signature_names(user_models: str) -> None:
    assert _outputs(build_model(f"{user_models}:cnn", 10, (1, 8, 8))) == 10
    assert _outputs(build_model(f"{user_models}:resnetish", 10, (1, 8, 8))) == 10  # num_classes by name
    assert _outputs(build_model(f"{user_models}:legacy", 10, (1, 8, 8))) == 10
    assert _outputs(build_model(f"{user_models}:shaped", 10, (1, 8, 8))) == 10
    net = build_model(f"{user_models}:Net", 10, (1, 8, 8), hidden=7)
    assert net.body[1].out_features == 7 and _outputs(net) == 10
    assert build_model(f"{user_models}:resnetish", 10, (1, 8, 8), width=5)[1].out_features == 5


def test_an_option_the_factory_cannot_take_is_one_clear_error(user_models: str) -> None:
    with pytest.raises(UsageError, match="does not take the argument 'depth'"):
        build_model(f"{user_models}:cnn", 10, (1, 8, 8), depth=3)
    with pytest.raises(UsageError, match="does not take the argument 'depth'"):
        build_model("mlp", 10, (1, 8, 8), depth=3)


def test_model_arg_on_the_command_line(user_models: str, tmp_path: Path, capsys) -> None:
    from robustprune.cli import main

    out = tmp_path / "score"
    args = ["score", "--model", f"{user_models}:Net", "--model-arg", "hidden=9", "--battery", "quick", "--n", "4"]
    assert main([*args, "--out", str(out)]) == 0
    assert main([*args[:3], "--model-arg", "nohidden", "--out", str(tmp_path / "x")]) == 2
    assert "must look like key=value" in capsys.readouterr().err
