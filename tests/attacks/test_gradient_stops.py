"""Gradient stops located anywhere in a forward pass, and their straight-through versions (BPDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from broken_models import reference_robust
from pathologies import (
    ArgmaxOneHot,
    ConstantBackward,
    EarlyExit,
    NoGradRegion,
    NumpyFlattened,
    Rounded,
    RoundedInPlace,
    Thresholded,
    ZeroBackward,
    ZeroTerm,
)
from torch import nn

from robustprune.attacks import run_battery
from robustprune.attacks.gradient_stops import locate_gradient_stops, straight_through_ops
from robustprune.config import AttackSpec, BatterySpec, ThreatModel


def grad_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """The input gradient, or None where the input is not in the loss's graph (parameters may still be)."""
    xg = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xg), y, reduction="sum")
    if not loss.requires_grad:
        return None
    return torch.autograd.grad(loss, xg, allow_unused=True)[0]


@pytest.fixture
def sample(digits_test):
    return digits_test.x[:16], digits_test.y[:16]


@pytest.mark.parametrize(
    ("wrapper", "op", "kind"),
    [
        (Rounded, "round", "zero derivative"),
        (RoundedInPlace, "round_", "zero derivative"),
        (ZeroBackward, "Function _ZeroRound", "masking backward"),
        (ConstantBackward, "Function _ConstantRound", "masking backward"),
        (Thresholded, "gt -> float", "discrete cast to float"),
        (ArgmaxOneHot, "argmax -> float", "discrete cast to float"),
        (ZeroTerm, "detach", "detached"),
        (NoGradRegion, "no_grad region", "no-grad region"),
        (NumpyFlattened, "detach", "detached"),
    ],
)
def test_each_kind_of_stop_is_located_at_the_models_own_line(wrapper, op, kind, trained_mlp, sample):
    stops = locate_gradient_stops(wrapper(trained_mlp).eval(), sample[0])
    found = [(s.op, s.kind) for s in stops]
    assert (op, kind) in found, found
    assert all(s.where.startswith("pathologies.py:") for s in stops if s.op == op)


def test_a_plain_model_has_no_stop_and_its_gradient_is_untouched(trained_mlp, sample):
    x, y = sample
    assert locate_gradient_stops(trained_mlp, x) == []
    before = grad_of(trained_mlp, x, y)
    with straight_through_ops(trained_mlp):
        assert torch.equal(grad_of(trained_mlp, x, y), before)


def test_an_early_exit_is_located_on_the_branch_the_examples_do_not_take(trained_mlp, sample):
    model = EarlyExit(trained_mlp).eval()
    x = sample[0]
    on_grid = {s.where for s in locate_gradient_stops(model, x) if s.op == "round"}  # the branch test's own round
    off_grid = {s.where for s in locate_gradient_stops(model, (x + 0.01).clamp(0, 1)) if s.op == "round"}
    assert on_grid and off_grid - on_grid  # the rounding branch: seen only off the data's grid


@pytest.mark.parametrize("wrapper", [Rounded, RoundedInPlace, ZeroBackward, Thresholded])
def test_straight_through_gives_the_explicit_straight_through_gradient_and_keeps_the_forward(
    wrapper, trained_mlp, sample
):
    """Under straight_through_ops, the model's forward values are unchanged and its input gradient is exactly the
    gradient of the same model written with `x + (f(x) - x).detach()` by hand."""
    x, y = sample
    model = wrapper(trained_mlp).eval()
    by_hand = (Thresholded if wrapper is Thresholded else Rounded)(trained_mlp, straight_through=True).eval()
    with torch.no_grad():
        plain = model(x)
    with straight_through_ops(model):
        with torch.no_grad():
            assert torch.equal(model(x), plain)
        bridged = grad_of(model, x, y)
    assert grad_of(model, x, y) is None or float(grad_of(model, x, y).abs().sum()) == 0.0
    assert torch.allclose(bridged, grad_of(by_hand, x, y), atol=1e-6)


def test_detach_and_no_grad_regions_give_the_inner_models_exact_gradient(trained_mlp, sample):
    x, y = sample
    exact = grad_of(trained_mlp, x, y)
    for wrapper in (ZeroTerm, NoGradRegion):
        model = wrapper(trained_mlp).eval()
        with straight_through_ops(model):
            assert torch.allclose(grad_of(model, x, y), exact, atol=1e-6)


def test_the_argmax_one_hot_is_bridged_by_the_softmax_of_its_source(trained_mlp, sample):
    x, y = sample
    model = ArgmaxOneHot(trained_mlp).eval()
    assert grad_of(model, x, y) is None
    with straight_through_ops(model):
        grad = grad_of(model, x, y)
    assert grad is not None and float(grad.abs().sum()) > 0


def test_a_numpy_round_trip_that_changes_shape_cannot_be_bridged(trained_mlp, sample):
    model = NumpyFlattened(trained_mlp).eval()
    with straight_through_ops(model):
        assert grad_of(model, *sample) is None


def test_the_patched_torch_functions_are_restored_even_when_the_forward_raises(trained_mlp, sample):
    apply, from_numpy = torch.autograd.Function.__dict__["apply"], torch.from_numpy

    class Raises(nn.Module):
        def forward(self, x):
            raise ValueError("inside")

    model = Raises()
    with pytest.raises(ValueError), straight_through_ops(model):
        model(sample[0])
    assert torch.autograd.Function.__dict__["apply"] is apply and torch.from_numpy is from_numpy
    assert "forward" not in model.__dict__
    assert torch.from_numpy(np.zeros(2)).shape == (2,)


@pytest.mark.parametrize("wrapper", [Rounded, ZeroBackward])
def test_bpda_through_a_functional_round_and_a_custom_function_matches_a_straight_through_reference(
    wrapper, trained_mlp, digits_test
):
    """BPDA (bpda_apgd with `ops`) against a torchattacks PGD crafted on the hand-written straight-through model
    and judged on the real one: at most one example more survives BPDA."""
    data = digits_test.subset(60)
    model = wrapper(trained_mlp).eval()
    threat = ThreatModel(norm="Linf", eps=0.1)
    plain = BatterySpec(name="pgd", threat=threat, attacks=(AttackSpec(name="pgd", params={"steps": 50}),))
    masked = int((~run_battery(model, data.x, data.y, plain, num_classes=10, seed=0).broken).sum())
    bpda = BatterySpec(
        name="bpda", threat=threat, attacks=(AttackSpec(name="bpda_apgd", params={"steps": 50, "restarts": 2}),)
    )
    ours = int((~run_battery(model, data.x, data.y, bpda, num_classes=10, seed=0).broken).sum())
    torch.manual_seed(0)
    reference = reference_robust(Rounded(trained_mlp, straight_through=True), model, data.x, data.y, 0.1)
    assert reference < masked  # the masking is real: plain PGD is flattered
    assert ours <= reference + 1
