"""Channel groups, exact channel zeroing, structured criteria (exact channel shares, monotone growth, per-weight
normalisation) and channel accounting, on small registry models and hand-built nets with known norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustprune.errors import UsageError
from robustprune.models import build_model
from robustprune.sparsity import PRUNING_CRITERIA, global_magnitude
from robustprune.sparsity.structured import (
    ChannelReport,
    apply_structured,
    channel_groups,
    channel_l1,
    channel_sparsity,
    infer_input_shape,
    is_structured,
    zero_channels,
)

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)
NAMES = ("channel_l1", "channel_l2", "layerwise_channel_l1", "layerwise_channel_l2")


def digits_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("digits_cnn", 10, DIGITS)


def small_vgg(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("vgg11", 10, CIFAR, width=8)


def closed_rows(masks: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: [int(c) for c in torch.nonzero(~m.flatten(1).any(1)).flatten()] for k, m in masks.items()}


class Chain(nn.Module):
    """fc1 4->2, fc2 2->2, fc3 2->3 with constant rows, so mean |w| and RMS are the row's value:
    fc1 rows 1.0 and 0.6 (sums 4 and 2.4), fc2 rows 0.8 and 2.0 (sums 1.6 and 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 2), nn.Linear(2, 2), nn.Linear(2, 3)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0] * 4, [0.6] * 4]))
            self.fc2.weight.copy_(torch.tensor([[0.8, 0.8], [2.0, 2.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def test_registered_and_flagged() -> None:
    for name in NAMES:
        fn = PRUNING_CRITERIA.get(name)
        assert fn.structured is True and is_structured(fn)
    assert not is_structured(global_magnitude)


def test_digits_groups_flatten_expansion_and_classifier_skipped() -> None:
    groups = channel_groups(digits_cnn(), DIGITS)
    assert [(g.layer, g.layers, g.n_channels) for g in groups] == [
        ("features.0", ("features.0",), 32),
        ("features.2", ("features.2",), 64),
        ("classifier.0", ("classifier.0",), 128),
    ]
    conv2 = groups[1]
    slices = {(s.module, s.param, s.dim): s for s in conv2.slices[3]}
    assert slices[("features.2", "weight", 0)].index == (3,)
    assert slices[("features.2", "bias", 0)].index == (3,)
    # conv channel 3 of 64x4x4 feeds Linear columns 48..63
    assert slices[("classifier.0", "weight", 1)].index == tuple(range(48, 64))
    assert conv2.to_dict()["touched"][-1]["per_channel"] == 16
    report = channel_sparsity(digits_cnn(), DIGITS)
    assert "model outputs" in report.skipped["classifier.2"]


def test_vgg_groups_include_batchnorm_and_running_stats() -> None:
    group = channel_groups(small_vgg(), CIFAR)[0]
    got = {(s.module, s.param, s.role, s.buffer) for s in group.slices[0]}
    assert got == {
        ("features.0", "weight", "producer", False),  # conv without bias
        ("features.1", "weight", "norm", False),
        ("features.1", "bias", "norm", False),
        ("features.1", "running_mean", "norm", True),
        ("features.1", "running_var", "norm", True),
        ("features.4", "weight", "consumer", False),
    }


def test_exclude_and_input_shape_errors() -> None:
    groups = channel_groups(digits_cnn(), DIGITS, exclude=("features.2",))
    assert [g.layer for g in groups] == ["features.0", "classifier.0"]
    with pytest.raises(UsageError, match="unknown prunable layers"):
        channel_groups(digits_cnn(), DIGITS, exclude=("features.9",))
    with pytest.raises(UsageError, match="does not fit the model"):
        channel_groups(digits_cnn(), (1, 12, 12))
    with pytest.raises(UsageError, match="positive ints"):
        channel_groups(digits_cnn(), (1, 0, 8))


def test_input_shape_inference() -> None:
    assert infer_input_shape(digits_cnn()) == DIGITS
    assert infer_input_shape(build_model("mlp", 10, DIGITS)) == DIGITS
    assert infer_input_shape(build_model("mlp", 10, (3, 4, 4), mean=(0.5,) * 3, std=(0.2,) * 3)) == (3, 4, 4)
    assert infer_input_shape(small_vgg()) == CIFAR
    model = digits_cnn()
    model.robustprune_input_shape = (1, 8, 8)
    assert infer_input_shape(model) == DIGITS
    with pytest.raises(UsageError, match="cannot infer the input shape"):
        infer_input_shape(Chain())  # takes (N, 4): no (C, H, W) form
    assert channel_groups(Chain(), (4,))[0].layer == "fc1"


@pytest.mark.parametrize("name", ["channel_l1", "channel_l2"])
@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.55])
def test_global_criteria_close_exactly_round_s_channels(name: str, sparsity: float) -> None:
    model = small_vgg()
    masks = PRUNING_CRITERIA.get(name)(model, sparsity, input_shape=CIFAR)
    groups = channel_groups(model, CIFAR)
    assert set(masks) == {p for g in groups for p in g.layers}
    total = sum(g.n_channels for g in groups)
    closed = closed_rows(masks)
    assert sum(len(v) for v in closed.values()) == round(sparsity * total)
    assert all(len(closed[g.layer]) < g.n_channels for g in groups)  # no layer emptied
    apply_structured(model, CIFAR, masks)
    report = channel_sparsity(model, CIFAR)
    assert report.closed == round(sparsity * total) and report.channels == total
    assert report.sparsity == pytest.approx(round(sparsity * total) / total)


@pytest.mark.parametrize("name", ["layerwise_channel_l1", "layerwise_channel_l2"])
def test_layerwise_criteria_within_one_channel_per_layer(name: str) -> None:
    model = digits_cnn()
    for sparsity in (0.1, 0.33, 0.7):
        masks = PRUNING_CRITERIA.get(name)(model, sparsity, input_shape=DIGITS)
        closed = closed_rows(masks)
        for group in channel_groups(model, DIGITS):
            assert abs(len(closed[group.layer]) - sparsity * group.n_channels) <= 1


def test_per_weight_normalisation_and_l2() -> None:
    # by mean |w|: fc1 row 1 (0.6) < fc2 row 0 (0.8) < ...; a sum would have picked fc2 row 0 (1.6 < 2.4)
    assert closed_rows(channel_l1(Chain(), 0.25, input_shape=(4,))) == {"fc1": [1], "fc2": []}
    l2 = PRUNING_CRITERIA.get("channel_l2")(Chain(), 0.25, input_shape=(4,))
    assert closed_rows(l2) == {"fc1": [1], "fc2": []}


def test_masks_only_grow_and_closed_channels_rank_first() -> None:
    model = digits_cnn()
    # close a strong channel by hand: it must stay in every later mask, ahead of weaker open channels
    strongest = int(model.features[0].weight.detach().flatten(1).abs().mean(1).argmax())
    zero_channels(model, DIGITS, {"features.0": [strongest]})
    previous: dict[str, set[int]] = {"features.0": {strongest}}
    for sparsity in (0.05, 0.2, 0.4):
        masks = channel_l1(model, sparsity, input_shape=DIGITS)
        closed = {k: set(v) for k, v in closed_rows(masks).items()}
        assert all(previous.get(k, set()) <= closed[k] for k in closed)
        apply_structured(model, DIGITS, masks)
        report = channel_sparsity(model, DIGITS)
        assert {lc.layer: set(lc.closed) for lc in report.layers} == closed
        previous = closed


def test_sparsity_bounds() -> None:
    with pytest.raises(UsageError, match=r"\[0, 1\)"):
        channel_l1(digits_cnn(), 1.0, input_shape=DIGITS)
    with pytest.raises(UsageError, match="keeps at least one"):
        channel_l1(Chain(), 0.9, input_shape=(4,))  # 4 channels, 2 layers: at most 2 can go
    with pytest.raises(UsageError, match="no layer has prunable channels"):
        channel_l1(Chain(), 0.5, input_shape=(4,), exclude=("fc1", "fc2"))


def relu_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda mod, args, y, name=name: out.__setitem__(name, y.detach().clone()))
        for name, m in model.named_modules()
        if isinstance(m, nn.ReLU)
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("train", [False, True])
def test_zero_channels_makes_activations_exactly_zero(train: bool) -> None:
    model = small_vgg()
    with torch.no_grad():  # BN with nontrivial running stats and affine terms: zero must not come by luck
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.1, 0.5)
    applied = zero_channels(model, CIFAR, {"features.0": [1, 5], "features.8": [0, 31]})
    assert applied == {"features.0": [1, 5], "features.8": [0, 31]}
    bn = model.features[1]
    assert not bn.weight_mask[[1, 5]].any() and not bn.bias_mask[[1, 5]].any()
    assert not model.features[4].weight_mask[:, [1, 5]].any()  # consumer columns
    model.train(train)
    x = torch.rand(4, *CIFAR)
    acts = relu_outputs(model, x)
    assert torch.equal(acts["features.2"][:, [1, 5]], torch.zeros(4, 2, 32, 32))
    assert torch.equal(acts["features.10"][:, [0, 31]], torch.zeros(4, 2, 8, 8))
    assert acts["features.2"][:, 0].abs().sum() > 0
    # masks persist through training: after an SGD step with weight decay the channels are still exactly zero
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    model(x).logsumexp(1).mean().backward()
    opt.step()
    acts = relu_outputs(model, torch.rand(4, *CIFAR))
    assert torch.equal(acts["features.2"][:, [1, 5]], torch.zeros(4, 2, 32, 32))
    report = channel_sparsity(model, CIFAR)
    assert isinstance(report, ChannelReport) and report.closed == 4


def test_zero_channels_combines_with_existing_masks() -> None:
    model = digits_cnn()
    unstructured = global_magnitude(model, 0.5)
    from robustprune.sparsity import apply_masks

    apply_masks(model, unstructured)
    zero_channels(model, DIGITS, {"features.2": [7]})
    mask = model.features[2].weight_mask
    assert torch.equal(mask[:7], unstructured["features.2"][:7]) and not mask[7].any()
    assert not model.classifier[0].weight_mask[:, 7 * 16 : 8 * 16].any()


def test_zero_channels_errors() -> None:
    model = digits_cnn()
    with pytest.raises(UsageError, match="model outputs"):
        zero_channels(model, DIGITS, {"classifier.2": [0]})
    with pytest.raises(UsageError, match="out of range"):
        zero_channels(model, DIGITS, {"features.0": [32]})
    with pytest.raises(UsageError, match="disconnect"):
        zero_channels(model, DIGITS, {"features.0": list(range(32))})
    assert not any(n.endswith("_orig") for n, _ in model.named_parameters())  # nothing half-applied


def test_apply_structured_refuses_unstructured_masks() -> None:
    model = digits_cnn()
    masks = global_magnitude(model, 0.5)
    with pytest.raises(UsageError, match="not a channel mask"):
        apply_structured(model, DIGITS, {"features.0": masks["features.0"]})
    with pytest.raises(UsageError, match="without an eligible channel group"):
        apply_structured(model, DIGITS, {"classifier.2": masks["classifier.2"]})


def test_dio_heads_are_outputs_and_backbone_is_prunable() -> None:
    torch.manual_seed(0)
    model = build_model("dio_digits_cnn", 10, DIGITS, heads=3)  # random mode: one forward uses one head
    report = channel_sparsity(model, DIGITS)
    assert [lc.layer for lc in report.layers] == ["backbone.features.0", "backbone.features.2", "backbone.classifier.0"]
    assert all("model outputs" in report.skipped[f"heads.{i}"] for i in range(3))
    group = channel_groups(model, DIGITS)[-1]
    consumers = {s.module for s in group.slices[0] if s.role == "consumer"}
    assert consumers == {"heads.0", "heads.1", "heads.2"}
