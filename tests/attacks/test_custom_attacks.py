"""A battery file can name attacks robustprune does not register: any torchattacks class that takes eps
(`torchattacks:MIFGSM`) and a user's Attack subclass (`package.module:Class`). Both go through the same engine:
seeded, verified, counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustprune.attacks import load_battery
from robustprune.errors import UsageError, VerificationError
from robustprune.scoring import score

USER_ATTACKS = """
import torch
from robustprune.attacks.base import Attack

class SignNoise(Attack):
    norms = ("Linf",)
    defaults = {"scale": 1.0}
    implementation = "user.SignNoise"
    uses_gradients = False

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        g = torch.Generator().manual_seed(seed)
        step = torch.sign(torch.rand(x.shape, generator=g) - 0.5) * self.threat.eps * self.settings["scale"]
        return (x + step).clamp(0, 1)
"""


@pytest.fixture
def user_attacks(user_module) -> str:
    return user_module(USER_ATTACKS, "user_attacks")


def _battery(tmp_path: Path, *entries: str) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text('name = "custom"\nnorm = "Linf"\neps = 0.1\n' + "".join(entries))
    return path


def test_torchattacks_class_and_user_attack_run_through_the_engine(tmp_path, user_attacks, trained_mlp, digits_test):
    battery = _battery(
        tmp_path,
        '[[attack]]\nname = "torchattacks:MIFGSM"\nsteps = 10\nalpha = 0.02\n',
        f'[[attack]]\nname = "{user_attacks}:SignNoise"\nlabel = "noise"\n',
    )
    result = score(trained_mlp, (digits_test.x[:64], digits_test.y[:64]), str(battery), seed=0)
    records = {a.label: a for a in result.attacks if a.role == "battery"}
    assert records["torchattacks:MIFGSM"].implementation == "torchattacks.MIFGSM"
    assert records["torchattacks:MIFGSM"].settings == {"alpha": 0.02, "decay": 1.0, "steps": 10}
    assert records["torchattacks:MIFGSM"].n_broken > 0  # a real attack on a real model
    assert records["noise"].implementation == "user.SignNoise" and records["noise"].settings == {"scale": 1.0}
    again = score(trained_mlp, (digits_test.x[:64], digits_test.y[:64]), str(battery), seed=0)
    assert again.document["per_sample"] == result.document["per_sample"]  # seeded like every attack


def test_an_attack_leaving_the_ball_is_caught_by_the_engine(tmp_path, user_attacks, trained_mlp, digits_test):
    battery = _battery(tmp_path, f'[[attack]]\nname = "{user_attacks}:SignNoise"\nscale = 3.0\n')
    with pytest.raises(VerificationError):
        score(trained_mlp, (digits_test.x[:32], digits_test.y[:32]), str(battery), seed=0)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("torchattacks:CW", "takes no eps"),
        ("torchattacks:Nope", "no attack class"),
        ("no_such_module_xyz:Attack", "cannot import"),
        ("torch:Tensor", "not a robustprune Attack subclass"),
    ],
)
def test_bad_custom_names_are_one_line_errors(tmp_path: Path, name: str, message: str) -> None:
    battery = _battery(tmp_path, f'[[attack]]\nname = "{name}"\n')
    with pytest.raises(UsageError, match=message):
        load_battery(str(battery))


def test_torchattacks_l2_classes_are_l2() -> None:
    from robustprune.attacks.base import ATTACKS

    assert ATTACKS.get("torchattacks:PGDL2").norms == ("L2",)
    assert ATTACKS.get("torchattacks:MIFGSM").norms == ("Linf",)
    assert "torchattacks:MIFGSM" not in ATTACKS.names()  # resolved on demand, not registered
