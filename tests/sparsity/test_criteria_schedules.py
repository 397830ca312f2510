"""Pruning criteria (exact counts, determinism, monotone growth) and schedules against their formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustprune.errors import UsageError
from robustprune.sparsity import (
    PRUNING_CRITERIA,
    agp_sparsity,
    apply_masks,
    effective_weight,
    global_magnitude,
    iterative_sparsities,
    layerwise_magnitude,
    one_cycle_sparsity,
    random_pruning,
    sparsity_report,
)


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9, 10), nn.Linear(10, 3))


def zeros_of(masks: dict[str, torch.Tensor]) -> int:
    return sum(int((~m).sum()) for m in masks.values())


def test_registry_names() -> None:
    assert PRUNING_CRITERIA.names() == sorted(
        [
            "global_magnitude",
            "layerwise_magnitude",
            "random",
            "channel_l1",
            "channel_l2",
            "layerwise_channel_l1",
            "layerwise_channel_l2",
        ]
    )
    assert PRUNING_CRITERIA.get("random") is random_pruning
    with pytest.raises(UsageError, match="global_magnitude"):
        PRUNING_CRITERIA.get("global_magnitud")


@pytest.mark.parametrize("s", [0.5, 0.9])
def test_global_magnitude_exact_count_keeps_largest(s: float) -> None:
    model = make_net()
    total = 36 + 360 + 30
    masks = global_magnitude(model, s)
    assert zeros_of(masks) == round(s * total)
    kept = torch.cat([effective_weight(m).abs().flatten()[masks[n].flatten()] for n, m in _layers(model)])
    cut = torch.cat([effective_weight(m).abs().flatten()[~masks[n].flatten()] for n, m in _layers(model)])
    assert float(kept.min()) >= float(cut.max())
    apply_masks(model, masks)
    assert sparsity_report(model)["prunable_nonzero"] == total - round(s * total)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def test_global_magnitude_ties_still_exact() -> None:
    model = nn.Sequential(nn.Linear(10, 10))
    nn.init.constant_(model[0].weight, 0.3)  # all 100 weights tie
    masks = global_magnitude(model, 0.37)
    assert zeros_of(masks) == 37
    assert torch.equal(masks["0"], global_magnitude(model, 0.37)["0"])  # deterministic tie break


def test_layerwise_gives_each_layer_the_fraction() -> None:
    model = make_net()
    masks = layerwise_magnitude(model, 0.5)
    assert {n: int((~m).sum()) for n, m in masks.items()} == {"0": 18, "3": 180, "4": 15}
    masks = layerwise_magnitude(model, 0.9)
    for name, module in _layers(model):
        w = effective_weight(module).abs()
        assert abs(int((~masks[name]).sum()) - 0.9 * w.numel()) < 1
        assert float(w[masks[name]].min()) >= float(w[~masks[name]].max())
    assert zeros_of(masks) == round(0.9 * 426)


def test_random_is_deterministic_with_generator_and_exact() -> None:
    model = make_net()
    a = random_pruning(model, 0.6, torch.Generator().manual_seed(7))
    b = random_pruning(model, 0.6, torch.Generator().manual_seed(7))
    c = random_pruning(model, 0.6, torch.Generator().manual_seed(8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert zeros_of(a) == round(0.6 * 426)


@pytest.mark.parametrize("name", ["global_magnitude", "layerwise_magnitude", "random"])
def test_growing_target_keeps_previous_zeros(name: str) -> None:
    model = make_net()
    criterion = PRUNING_CRITERIA.get(name)
    gen = torch.Generator().manual_seed(0)
    first = criterion(model, 0.5, gen)
    apply_masks(model, first)
    with torch.no_grad():  # a training step would move survivors; the pruned ones must stay pruned
        for _, m in _layers(model):
            m.weight_orig.mul_(torch.rand_like(m.weight_orig) + 0.5)
    second = criterion(model, 0.8, gen)
    for key in first:
        assert bool((~second[key])[~first[key]].all())
    assert zeros_of(second) == round(0.8 * 426)


def test_exclude_leaves_layers_out() -> None:
    model = make_net()
    masks = global_magnitude(model, 0.5, exclude=("0", "4"))
    assert set(masks) == {"3"} and zeros_of(masks) == 180
    with pytest.raises(UsageError, match="unknown prunable layers"):
        global_magnitude(model, 0.5, exclude=("classifier",))
    with pytest.raises(UsageError, match="no prunable layer"):
        random_pruning(model, 0.5, exclude=("0", "3", "4"))


@pytest.mark.parametrize("bad", [1.0, 1, -0.1, float("nan"), True, "0.5"])
def test_invalid_sparsity(bad: object) -> None:
    for criterion in (global_magnitude, layerwise_magnitude, random_pruning):
        with pytest.raises(UsageError, match=r"is impossible: use a value in \[0, 1\)"):
            criterion(make_net(), bad)
    if bad == 1.0:
        with pytest.raises(UsageError, match=r"^sparsity 1.0 is impossible: use a value in \[0, 1\)$"):
            global_magnitude(make_net(), 1.0)


def test_zero_sparsity_prunes_nothing() -> None:
    assert zeros_of(global_magnitude(make_net(), 0.0)) == 0


def test_agp_schedule_formula() -> None:
    kw = {"s_init": 0.0, "s_final": 0.8, "t0": 10, "n_steps": 4, "dt": 5}
    assert agp_sparsity(0, **kw) == 0.0 and agp_sparsity(10, **kw) == 0.0
    assert agp_sparsity(20, **kw) == pytest.approx(0.8 - 0.8 * 0.5**3)  # = 0.7
    assert agp_sparsity(15, **kw) == pytest.approx(0.8 - 0.8 * 0.75**3)
    assert agp_sparsity(30, **kw) == pytest.approx(0.8) and agp_sparsity(1000, **kw) == pytest.approx(0.8)
    assert agp_sparsity(3, 0.2, 0.9, 1, 4) == pytest.approx(0.9 + (0.2 - 0.9) * 0.5**3)
    with pytest.raises(UsageError):
        agp_sparsity(0, 0.0, 0.8, 0, 0)


def test_one_cycle_schedule_formula() -> None:
    def formula(p: float, s_f: float, a: float = 14.0, b: float = 6.0) -> float:
        return s_f * (1 + math.exp(-a + b)) / (1 + math.exp(-a * p + b))

    assert one_cycle_sparsity(100, 100, 0.9) == 0.9  # s(1) = s_f exactly
    assert one_cycle_sparsity(50, 100, 0.9) == pytest.approx(formula(0.5, 0.9))
    assert one_cycle_sparsity(50, 100, 0.9) == pytest.approx(0.9 * (1 + math.exp(-8)) / (1 + math.exp(-1)))
    assert (
        one_cycle_sparsity(0, 100, 0.9) == pytest.approx(formula(0.0, 0.9)) and one_cycle_sparsity(0, 100, 0.9) < 0.01
    )
    assert one_cycle_sparsity(-5, 100, 0.9) == one_cycle_sparsity(0, 100, 0.9)  # clamped
    assert one_cycle_sparsity(25, 100, 0.9, alpha=10.0, beta=5.0) == pytest.approx(formula(0.25, 0.9, 10.0, 5.0))
    values = [one_cycle_sparsity(t, 20, 0.9) for t in range(21)]
    assert values == sorted(values)
    with pytest.raises(UsageError):
        one_cycle_sparsity(0, 0, 0.9)


def test_iterative_sparsities_geometric() -> None:
    targets = iterative_sparsities(0.9, 3)
    assert len(targets) == 3 and targets[-1] == 0.9
    assert targets[0] == pytest.approx(1 - 0.1 ** (1 / 3))
    kept = [1.0] + [1 - t for t in targets]
    ratios = [kept[i + 1] / kept[i] for i in range(3)]
    assert ratios == pytest.approx([0.1 ** (1 / 3)] * 3)
    assert iterative_sparsities(0.5, 1) == [0.5]
    with pytest.raises(UsageError):
        iterative_sparsities(0.9, 0)
