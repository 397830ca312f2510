"""A battery file can name attacks robustprune does not register: any torchattacks class that takes eps
(`torchattacks:MIFGSM`) and a user's Attack subclass (`package.module:Class`). Both go through the same engine:
seeded, verified, counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustprune.attacks import load_battery
from robustprune.config import allowing_imports
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
    with allowing_imports():  # the battery file names a user's class: it may import it only when asked
        result = score(trained_mlp, (digits_test.x[:64], digits_test.y[:64]), str(battery), seed=0)
    records = {a.label: a for a in result.attacks if a.role == "battery"}
    assert records["torchattacks:MIFGSM"].implementation == "torchattacks.MIFGSM"
    assert records["torchattacks:MIFGSM"].settings == {"alpha": 0.02, "decay": 1.0, "steps": 10}
    assert records["torchattacks:MIFGSM"].n_broken > 0  # a real attack on a real model
    assert records["noise"].implementation == "user.SignNoise" and records["noise"].settings == {"scale": 1.0}
    with allowing_imports():
        again = score(trained_mlp, (digits_test.x[:64], digits_test.y[:64]), str(battery), seed=0)
    assert again.document["per_sample"] == result.document["per_sample"]  # seeded like every attack


def test_an_attack_leaving_the_ball_is_caught_by_the_engine(tmp_path, user_attacks, trained_mlp, digits_test):
    battery = _battery(tmp_path, f'[[attack]]\nname = "{user_attacks}:SignNoise"\nscale = 3.0\n')
    with pytest.raises(VerificationError), allowing_imports():
        score(trained_mlp, (digits_test.x[:32], digits_test.y[:32]), str(battery), seed=0)


def test_a_battery_file_imports_no_code_unless_asked(tmp_path, user_module, trained_mlp, digits_test):
    """A battery file is data: naming a user's class is refused before anything is imported, unless the command
    line (--allow-imports) or the Python API (allowing_imports) asks; torchattacks classes need no permission."""
    marker = tmp_path / "imported"
    module = user_module(f"open({str(marker)!r}, 'w').close()\n", "imports_when_loaded")
    battery = _battery(tmp_path, f'[[attack]]\nname = "{module}:Anything"\n')
    with pytest.raises(UsageError, match=r"is an import path, and a battery file imports no code unless asked"):
        load_battery(str(battery))
    assert not marker.exists()
    audit = _battery(tmp_path, '[[attack]]\nname = "pgd"\n\n[audit]\nattack = "os:system"\n')
    with pytest.raises(UsageError, match=r"\[audit\] attack 'os:system' is an import path"):
        load_battery(str(audit))
    load_battery(str(_battery(tmp_path, '[[attack]]\nname = "torchattacks:MIFGSM"\n')))


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
    with pytest.raises(UsageError, match=message), allowing_imports():
        load_battery(str(battery))


def test_torchattacks_l2_classes_are_l2() -> None:
    from robustprune.attacks.base import ATTACKS

    assert ATTACKS.get("torchattacks:PGDL2").norms == ("L2",)
    assert ATTACKS.get("torchattacks:MIFGSM").norms == ("Linf",)
    assert "torchattacks:MIFGSM" not in ATTACKS.names()  # resolved on demand, not registered
