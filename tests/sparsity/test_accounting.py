"""Masks, sparsity accounting and the dead-ReLU rate on tiny hand-built models with known zeros."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from robustprune.errors import UsageError
from robustprune.metrics.activity import dead_relu_rate
from robustprune.models.state import fold_pruned_state_dict
from robustprune.sparsity import (
    apply_masks,
    current_masks,
    effective_weight,
    prunable_modules,
    remove_masks,
    sparsity_report,
)


class Net(nn.Module):
    """conv 1->2 k3 on (1,5,5) -> (2,3,3); linear 18->3. 18 + 2 + 54 + 3 = 77 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(18, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(1, 19, dtype=torch.float32).view(2, 1, 3, 3))
            self.conv.weight.view(-1)[:6] = 0  # 6 zeros of 18
            self.fc.weight.copy_(torch.arange(1, 55, dtype=torch.float32).view(3, 18) / 10)
            self.fc.weight.view(-1)[::2] = 0  # 27 zeros of 54
            self.conv.bias.fill_(1.0)
            self.fc.bias.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


class Normalize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5]).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor([0.25]).view(1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def test_prunable_modules_only_conv_and_linear() -> None:
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.Conv3d(1, 1, 1), nn.Linear(2, 2), nn.LayerNorm(2))
    assert [name for name, _ in prunable_modules(model)] == ["0", "2", "3"]


def test_report_exact_counts_per_layer_and_macs() -> None:
    rep = sparsity_report(Net(), (1, 5, 5))
    assert (rep["prunable_params"], rep["prunable_nonzero"]) == (72, 39)
    assert rep["sparsity"] == pytest.approx(33 / 72)
    conv, fc = rep["layers"]
    assert conv == {
        "name": "conv",
        "type": "Conv2d",
        "shape": [2, 1, 3, 3],
        "numel": 18,
        "nonzero": 12,
        "sparsity": pytest.approx(6 / 18),
        "macs_dense": 18 * 9,
        "macs_effective": 9 * 12,
    }
    assert fc == {
        "name": "fc",
        "type": "Linear",
        "shape": [3, 18],
        "numel": 54,
        "nonzero": 27,
        "sparsity": pytest.approx(0.5),
        "macs_dense": 54,
        "macs_effective": 27,
    }
    assert (rep["macs_dense"], rep["macs_effective"]) == (162 + 54, 108 + 27)
    # biases count in all-parameter sparsity: 12 + 2 + 27 + 3 nonzero of 77
    assert (rep["all_params"], rep["all_nonzero"]) == (77, 44)
    assert rep["all_sparsity"] == pytest.approx(33 / 77)
    assert rep["compression_ratio"] == pytest.approx(77 / 44)


def test_report_without_input_shape_has_no_macs() -> None:
    rep = sparsity_report(Net())
    assert rep["macs_dense"] is None and rep["macs_effective"] is None
    assert rep["layers"][0]["macs_dense"] is None


def test_macs_grouped_strided_conv_and_linear_over_positions() -> None:
    conv = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2)  # (4,6,6) -> (4,3,3): 36 outputs * (4/2*9)
    assert sparsity_report(nn.Sequential(conv), (4, 6, 6))["macs_dense"] == 36 * 18
    lin = nn.Linear(8, 2)  # applied at 4 positions of a (1, 4, 8) input
    assert sparsity_report(nn.Sequential(lin), (4, 8))["macs_dense"] == 4 * 16


def test_report_through_normalize_wrapper() -> None:
    rep = sparsity_report(nn.Sequential(Normalize(), Net()), (1, 5, 5))
    assert [row["name"] for row in rep["layers"]] == ["1.conv", "1.fc"]
    assert rep["prunable_nonzero"] == 39 and rep["all_params"] == 77  # buffers are not parameters
    assert rep["macs_effective"] == 135


def test_torch_prune_model_reports_mask_sparsity_not_zero() -> None:
    model = nn.Sequential(Normalize(), nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 9, 10))
    prune.global_unstructured([(model[1], "weight"), (model[3], "weight")], prune.L1Unstructured, amount=0.75)
    rep = sparsity_report(model, (1, 5, 5))
    total = 36 + 360
    assert rep["prunable_params"] == total
    assert rep["prunable_nonzero"] == total - round(0.75 * total)
    assert rep["sparsity"] == pytest.approx(round(0.75 * total) / total)
    # weight_orig is dense but must not be counted, nor counted twice: 36 + 4 + 360 + 10 parameters
    assert rep["all_params"] == 410
    assert rep["all_nonzero"] == 410 - round(0.75 * total)


def test_report_leaves_model_state_alone() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(18, 2))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    model.train()
    model[3].eval()  # a mixed-mode model must come back mixed
    stats = model[1].running_mean.clone(), int(model[1].num_batches_tracked)
    weight_attr = model[0].weight
    sparsity_report(model, (1, 5, 5))
    assert model.training and model[1].training and not model[3].training
    assert torch.equal(model[1].running_mean, stats[0]) and int(model[1].num_batches_tracked) == stats[1]
    assert model[0].weight is weight_attr and model[0].weight.grad_fn is not None


def test_report_bad_input_shape_and_no_prunable_layer() -> None:
    with pytest.raises(UsageError, match="does not fit"):
        sparsity_report(Net(), (3, 5, 5))
    with pytest.raises(UsageError, match="positive ints"):
        sparsity_report(Net(), (1, 0, 5))
    with pytest.raises(UsageError, match="nothing is prunable"):
        sparsity_report(nn.Sequential(nn.ReLU()))


def test_apply_masks_forward_and_optimizer_step_keep_zeros() -> None:
    torch.manual_seed(0)
    model = Net()
    mask = torch.rand(3, 18) > 0.5
    apply_masks(model, {"fc": mask})
    assert torch.equal(effective_weight(model.fc) != 0, mask & (model.fc.weight_orig != 0))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    for _ in range(2):
        opt.zero_grad()
        model(torch.rand(4, 1, 5, 5)).square().sum().backward()
        opt.step()
    assert bool((effective_weight(model.fc)[~mask] == 0).all())
    model(torch.rand(1, 1, 5, 5))
    assert bool((model.fc.weight[~mask] == 0).all())  # the forward pass sees the masked weight
    assert bool((model.fc.weight[mask] != 0).any())


def test_apply_masks_twice_replaces_mask_cleanly() -> None:
    model = Net()
    first = torch.ones(3, 18, dtype=torch.bool)
    first[0] = False
    apply_masks(model, {"fc": first})
    param = model.fc.weight_orig
    second = torch.ones(3, 18)
    second[1] = 0  # float {0,1} mask accepted; replaces the first
    apply_masks(model, {"fc": second})
    hooks = [h for h in model.fc._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
    assert len(hooks) == 1 and not isinstance(hooks[0], prune.PruningContainer)
    assert torch.equal(model.fc.weight_mask.bool(), second.bool())
    assert model.fc.weight_orig is param  # same Parameter, so an existing optimizer still updates it
    w = effective_weight(model.fc)
    assert bool((w[0] == 0).all()) and bool((w[1] == 0).all())  # row 0 revived from exactly 0
    assert current_masks(model)["fc"].dtype == torch.bool


def test_apply_masks_validation() -> None:
    model = Net()
    with pytest.raises(UsageError, match="unknown prunable layers"):
        apply_masks(model, {"classifier": torch.ones(3, 18)})
    with pytest.raises(UsageError, match="shape"):
        apply_masks(model, {"fc": torch.ones(18, 3)})
    with pytest.raises(UsageError, match="0 and 1"):
        apply_masks(model, {"fc": torch.full((3, 18), 0.5)})
    assert not hasattr(model.fc, "weight_mask")


def test_current_masks_unpruned_and_pruned() -> None:
    model = Net()
    masks = current_masks(model)
    assert int(masks["conv"].sum()) == 12 and int(masks["fc"].sum()) == 27
    prune.random_unstructured(model.conv, "weight", amount=0.5)
    assert torch.equal(current_masks(model)["conv"], model.conv.weight_mask.bool())


def test_remove_masks_makes_plain_weights_with_zeros() -> None:
    model = Net()
    mask = torch.zeros(2, 1, 3, 3, dtype=torch.bool)
    mask[0] = True
    apply_masks(model, {"conv": mask})
    prune.l1_unstructured(model.fc, "bias", amount=1)
    remove_masks(model)
    keys = set(model.state_dict())
    assert keys == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}
    assert (
        isinstance(model.conv.weight, nn.Parameter) and int((model.conv.weight != 0).sum()) == 3
    )  # channel 0 minus its 6 zeros
    assert int((model.fc.bias == 0).sum()) == 1


def test_fold_pruned_state_dict_round_trip() -> None:
    torch.manual_seed(1)
    model = Net()
    prune.l1_unstructured(model.conv, "weight", amount=0.5)
    prune.random_unstructured(model.fc, "weight", amount=0.3)
    sd = model.state_dict()
    with pytest.raises(RuntimeError):
        Net().load_state_dict(sd)  # the pitfall being fixed
    folded, masks = fold_pruned_state_dict(sd)
    assert list(folded) == ["conv.bias", "conv.weight", "fc.bias", "fc.weight"]
    fresh = Net()
    fresh.load_state_dict(folded)
    assert torch.equal(fresh.conv.weight, effective_weight(model.conv))
    assert torch.equal(fresh.fc.weight, effective_weight(model.fc))
    assert set(masks) == {"conv", "fc"} and torch.equal(masks["fc"], model.fc.weight_mask.bool())
    assert sparsity_report(fresh)["prunable_nonzero"] == sparsity_report(model)["prunable_nonzero"]
    plain = Net().state_dict()
    assert fold_pruned_state_dict(plain)[0].keys() == plain.keys() and fold_pruned_state_dict(plain)[1] == {}


def test_fold_rejects_ambiguous_keys() -> None:
    sd = {"a.weight": torch.ones(2), "a.weight_orig": torch.ones(2), "a.weight_mask": torch.ones(2)}
    with pytest.raises(UsageError, match="both"):
        fold_pruned_state_dict(sd)


class ReluNet(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        self.act = nn.ReLU()
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


def test_dead_relu_rate_all_dead_and_none_dead() -> None:
    x = torch.rand(10, 4)
    assert dead_relu_rate(ReluNet(torch.zeros(8, 4), torch.full((8,), -100.0)), x) == 1.0
    assert dead_relu_rate(ReluNet(torch.zeros(8, 4), torch.full((8,), 1.0)), x) == 0.0


def test_dead_relu_rate_dynamic_vs_always() -> None:
    # unit0 = relu(x), unit1 = relu(-x), unit2 = relu(-1): 4 of 6 (example, unit) pairs are 0; only unit2 always 0
    net = ReluNet(torch.tensor([[1.0], [-1.0], [0.0]]), torch.tensor([0.0, 0.0, -1.0]))
    x = torch.tensor([[1.0], [-1.0]])
    assert dead_relu_rate(net, x) == pytest.approx(4 / 6)
    assert dead_relu_rate(net, x, batch_size=1) == pytest.approx(4 / 6)
    assert dead_relu_rate(net, x, batch_size=1, mode="always") == pytest.approx(1 / 3)
    net.train()
    dead_relu_rate(net, x)
    assert net.training


def test_dead_relu_rate_bad_input() -> None:
    with pytest.raises(UsageError, match="no nn.ReLU"):
        dead_relu_rate(nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(UsageError, match="non-empty"):
        dead_relu_rate(ReluNet(torch.zeros(1, 1), torch.zeros(1)), torch.zeros(0, 1))
    assert math.isfinite(dead_relu_rate(ReluNet(torch.zeros(1, 1), torch.zeros(1)), torch.zeros(3, 1)))
