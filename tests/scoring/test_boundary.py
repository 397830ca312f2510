"""Where user code meets the engine: copies in, logits checked out, the model's state watched, one line out.

Models and attacks that edit what they are handed, that change the weights, that return something other than
logits, that raise or exit: each is caught with the right message, and wherever a number is produced it is the
number of the untouched model on the untouched examples."""

from __future__ import annotations

import copy
import re
import sys

import numpy as np
import pytest
import torch
from pathologies import BatchStatistics, EditsItsInput
from torch import nn
from torch.nn.utils import prune

from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.errors import ModelChanged, UsageError, UserCodeError, VerificationError
from robustprune.scoring import EscalationBudget, score

THREAT = ThreatModel(norm="Linf", eps=0.1)
QUICK = BatterySpec(name="q", threat=THREAT, attacks=(AttackSpec(name="pgd", params={"steps": 10}),))
BUDGET = EscalationBudget(square_queries=100, steps=10, restarts=1)
N = 30

USER_ATTACKS = """
import torch
from robustprune.attacks.base import Attack

def _step(x, eps, seed):
    g = torch.Generator().manual_seed(seed)
    return (x + eps * torch.sign(torch.rand(x.shape, generator=g) - 0.5)).clamp(0, 1)

class SignNoise(Attack):
    defaults = {}
    uses_gradients = False
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return _step(x, self.threat.eps, seed)

class SignNoiseThenWipes(SignNoise):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        out = _step(x, self.threat.eps, seed)
        x.mul_(0)  # edits the examples it was handed, and their labels
        y.zero_()
        return out

class ReturnsItsWipedInput(SignNoise):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return x.mul_(0)

class ZeroesTheWeights(SignNoise):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return x

class Raises(SignNoise):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        raise ValueError("attack boom")

class ReturnsAList(SignNoise):
    def perturb(self, model, x, y, **kwargs):
        return [x]

class ReturnsFloat64(SignNoise):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return _step(x, self.threat.eps, seed).double()

class ReturnsFloat16(SignNoise):
    def perturb_batch(self, model, x, y, *, seed, batch_size):
        return _step(x, self.threat.eps, seed).half()
"""


@pytest.fixture
def data(digits_test):
    return digits_test.subset(N)


@pytest.fixture
def attacks(user_module) -> str:
    return user_module(USER_ATTACKS, "boundary_attacks")


def one_attack(module: str, name: str) -> BatterySpec:
    return BatterySpec(name="user", threat=THREAT, attacks=(AttackSpec(name=f"{module}:{name}", label="user"),))


def run(model, data, battery=QUICK):
    return score(model, data, battery, seed=0, escalation_budget=BUDGET, efficiency=False)


def test_a_model_that_edits_its_input_leaves_the_examples_and_the_numbers_alone(trained_mlp, data):
    before = data.x.clone()
    edited = run(EditsItsInput(copy.deepcopy(trained_mlp)), data)
    plain = run(trained_mlp, data)
    assert torch.equal(data.x, before)
    assert (edited.clean_acc, edited.robust_acc) == (plain.clean_acc, plain.robust_acc)
    assert (edited.per_sample.broken == plain.per_sample.broken).all()
    assert edited.data.fingerprint == plain.data.fingerprint == data.fingerprint()
    assert not edited.randomized and edited.model_contract.inputs_copied


def test_an_attack_that_edits_its_input_is_judged_against_the_engines_own_examples(attacks, trained_mlp, data):
    wiped = run(trained_mlp, data, one_attack(attacks, "SignNoiseThenWipes"))
    clean = run(trained_mlp, data, one_attack(attacks, "SignNoise"))
    assert (wiped.robust_acc, wiped.clean_acc) == (clean.robust_acc, clean.clean_acc)
    assert (wiped.per_sample.attacks["user"].norm[wiped.per_sample.attacks["user"].attempted] <= 0.1 + 1e-6).all()
    assert np.allclose(wiped.adversarial.x_clean, data.x.numpy()[wiped.adversarial.index])
    with pytest.raises(VerificationError, match=r"perturbation 1 > eps 0.1"):
        run(trained_mlp, data, one_attack(attacks, "ReturnsItsWipedInput"))


def test_an_attack_that_changes_the_weights_is_caught_and_the_model_restored(attacks, trained_mlp, data):
    weights = {k: v.clone() for k, v in trained_mlp.state_dict().items()}
    with pytest.raises(ModelChanged, match=r"attack 'user' changed the model .*parameter 'fc1.weight' changed"):
        run(trained_mlp, data, one_attack(attacks, "ZeroesTheWeights"))
    assert all(torch.equal(weights[k], v) for k, v in trained_mlp.state_dict().items())
    again = run(trained_mlp, data)  # the model scores as it did before
    assert again.clean_acc == run(copy.deepcopy(trained_mlp), data).clean_acc


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        (
            "Raises",
            UserCodeError,
            r"the attack \(.*Raises\) raised ValueError\('attack boom'\) \(battery, attack user\)",
        ),
        ("ReturnsAList", UserCodeError, r"returned a list of 1 \(Tensor \(\d+, 1, 8, 8\)\)"),
    ],
)
def test_a_failing_attack_is_one_line_naming_it(name, error, message, attacks, trained_mlp, data):
    with pytest.raises(error, match=message) as caught:
        run(trained_mlp, data, one_attack(attacks, name))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["ReturnsFloat64", "ReturnsFloat16"])
def test_attacks_returning_other_float_dtypes_are_verified_in_the_inputs_dtype(name, attacks, trained_mlp, data):
    result = run(trained_mlp, data, one_attack(attacks, name))
    assert result.robust_acc <= result.clean_acc and result.adversarial.x.dtype == np.float32


class Returns(nn.Module):
    def __init__(self, inner: nn.Module, what: str) -> None:
        super().__init__()
        self.inner, self.what = inner, what

    def forward(self, x: torch.Tensor):
        out = self.inner(x)
        return {
            "tuple": lambda: (out, x),
            "dict": lambda: {"logits": out},
            "list": lambda: [out],
            "none": lambda: None,
            "numpy": lambda: out.detach().numpy(),
            "int": lambda: out.long(),
            "bool": lambda: out > 0,
            "complex": lambda: out.to(torch.complex64),
            "fewer rows": lambda: out[:-1],
            "more rows": lambda: torch.cat([out, out[:1]]),
            "three dims": lambda: out[:, :, None],
            "other classes": lambda: out[:, :5],
        }[self.what]()


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("tuple", "returned a tuple of 2 (Tensor (8, 10), Tensor (8, 1, 8, 8)) on its 1st call, not a tensor"),
        (
            "dict",
            (
                "returned a dict with keys 'logits' on its 1st call, not a tensor of logits (model contract, batch of "
                "8); return out['logits']"
            ),
        ),
        ("list", "returned a list of 1 (Tensor (8, 10))"),
        ("none", "returned None on its 1st call"),
        ("numpy", "returned a numpy.ndarray of shape (8, 10)"),
        ("int", "returned an int64 tensor of shape (8, 10) on its 1st call; logits must be real floating point"),
        ("bool", "returned a bool tensor"),
        ("complex", "returned a complex64 tensor"),
        ("fewer rows", "returned shape (7, 10) on its 1st call where (8, 10) logits were due"),
        ("more rows", "returned shape (9, 10) on its 1st call where (8, 10) logits were due"),
        ("three dims", "returned shape (8, 10, 1)"),
        ("other classes", "returned shape (8, 5)"),
    ],
)
def test_the_model_contract_names_each_bad_output(what, message, trained_mlp, data):
    with pytest.raises(UsageError) as caught:
        run(Returns(trained_mlp, what), data)
    assert message in str(caught.value) and str(caught.value).startswith("the model ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("how", ["float16 logits", "bfloat16 logits", "float16", "bfloat16", "float64"])
def test_other_dtypes_are_scored_in_their_own_dtype_and_recorded(how, trained_mlp, data):
    if how.endswith("logits"):
        dtype = getattr(torch, how.split()[0])
        model = nn.Sequential(trained_mlp, type("Cast", (nn.Module,), {"forward": lambda self, z: z.to(dtype)})())
    else:
        model = copy.deepcopy(trained_mlp).to(getattr(torch, how))
    result = run(model, data)
    plain = run(trained_mlp, data)
    contract = result.model_contract
    assert contract.output_dtype == how.split()[0]
    assert contract.model_dtype == ("float32" if how.endswith("logits") else how)
    assert contract.input_dtype == ("float32" if how.endswith("logits") else how)
    assert abs(result.clean_acc - plain.clean_acc) <= 100 / N  # at most one example moved by the rounding
    assert result.document["model_contract"]["batch_independent"] is True


class CountsCalls(nn.Module):
    def __init__(self, inner: nn.Module, fail_from: int, exc: BaseException) -> None:
        super().__init__()
        self.inner, self.fail_from, self.exc, self.calls = inner, fail_from, exc, 0

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.fail_from:
            raise self.exc
        return self.inner(x)


def test_a_model_failing_on_its_second_call_is_unusable_from_the_start(trained_mlp, data):
    with pytest.raises(UsageError, match=r"^the model raised RuntimeError\('boom'\) on its 2nd call \(model contract"):
        run(CountsCalls(trained_mlp, 2, RuntimeError("boom")), data)


def test_a_model_failing_during_the_run_is_a_run_error_naming_the_stage_and_attack(trained_mlp, data):
    """It passes the contract (three calls), then fails on every call: the checks record their errors, the battery
    cannot go on (exit 1)."""
    with pytest.raises(UserCodeError) as caught:
        run(CountsCalls(trained_mlp, 4, RuntimeError("late")), data)
    assert re.search(
        r"^the model raised RuntimeError\('late'\) on its \d+(st|nd|rd|th) call \(battery", str(caught.value)
    )


def test_sys_exit_in_forward_is_an_error_not_an_exit(trained_mlp, data):
    with pytest.raises(UsageError, match=r"the model called sys.exit\(0\) on its 1st call"):
        run(CountsCalls(trained_mlp, 1, SystemExit(0)), data)


class RescalesItself(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        with torch.no_grad():
            self.inner.fc1.weight.mul_(1.5)
        return self.inner(x)


def test_a_forward_that_changes_its_own_weights_is_refused_before_any_attack_and_restored(trained_mlp, data):
    model = RescalesItself(trained_mlp)
    before = trained_mlp.fc1.weight.detach().clone()
    with pytest.raises(UsageError, match=r"changes its own state .*parameter 'inner.fc1.weight' changed"):
        run(model, data)
    assert torch.equal(trained_mlp.fc1.weight, before)


def test_a_batch_dependent_model_is_scored_as_randomized_and_says_so(trained_mlp, data):
    result = run(BatchStatistics(trained_mlp), data)
    assert result.randomized and result.model_contract.batch_independent is False
    assert result.health.check("S2").status == "warn" and "batch" in result.health.check("S2").message
    assert result.verdict != "trusted"


def test_noise_in_forward_is_not_mistaken_for_batch_dependence(trained_mlp, data):
    from pathologies import NoisyForward

    result = run(NoisyForward(trained_mlp), data)
    assert result.randomized and result.model_contract.batch_independent is None
    s2 = result.health.check("S2")
    assert s2.status == "warn" and "not deterministic" in s2.message and "batch" not in s2.message


@pytest.mark.parametrize("value", [2.0, 0.5, -1.0, 3])
def test_a_prune_mask_that_is_not_zero_or_one_is_refused(value, trained_mlp, data):
    mask = torch.ones_like(trained_mlp.fc1.weight)
    mask[0, 0] = value
    prune.custom_from_mask(trained_mlp.fc1, "weight", mask)
    with pytest.raises(UsageError, match=rf"the prune mask of fc1.weight holds {value!r}"):
        run(trained_mlp, data)


def test_the_data_handed_in_is_never_written(trained_mlp, data):
    class Vandal(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            x.zero_()  # on the boundary's copy
            return self.inner(x)

    before = data.x.clone()
    run(Vandal(trained_mlp), data)
    assert torch.equal(data.x, before)


def test_the_run_module_reports_a_stray_sys_exit_as_an_error(capsys):
    from robustprune.cli.common import run as run_cli

    assert run_cli(lambda: sys.exit(0)) == 1
    assert "sys.exit(0)" in capsys.readouterr().err
