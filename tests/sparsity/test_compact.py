"""Compaction: exact (outputs within 1e-5) and strictly smaller for every registry architecture, residual groups
removed only as a whole, nothing removed for unstructured or bias-carrying channels, masks surviving a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from robustprune.models import MODELS, build_model, load_checkpoint, save_checkpoint
from robustprune.sparsity import PRUNING_CRITERIA, apply_masks, global_magnitude
from robustprune.sparsity.compact import compact
from robustprune.sparsity.structured import apply_structured, channel_sparsity, model_outputs, zero_channels

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)

# Every registry architecture, with the smallest input/width its factory allows (vgg11 has `width`; the others
# have fixed widths). A new registry entry fails test_every_architecture_is_covered until it is added here.
ARCHS: dict[str, tuple[tuple[int, int, int], dict]] = {
    "mlp": (DIGITS, {}),
    "digits_cnn": (DIGITS, {}),
    "vgg11": (CIFAR, {"width": 8}),
    "preact_resnet18": (CIFAR, {}),
    "dio_mlp": (DIGITS, {"heads": 3}),
    "dio_digits_cnn": (DIGITS, {"heads": 3}),
    "dio_vgg11": (CIFAR, {"heads": 2}),
    "dio_preact_resnet18": (CIFAR, {"heads": 2}),
}


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    shape, kwargs = ARCHS[name]
    return build_model(name, 10, shape, **kwargs)


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model_outputs(model.eval(), x)


def test_every_architecture_is_covered() -> None:
    assert set(ARCHS) == set(MODELS.names())


@pytest.mark.parametrize("name", list(ARCHS))
def test_compaction_is_exact_and_smaller(name: str) -> None:
    shape = ARCHS[name][0]
    model = build(name)
    criterion = "layerwise_channel_l2" if "resnet" in name else "channel_l1"
    apply_structured(model, shape, PRUNING_CRITERIA.get(criterion)(model, 0.4, input_shape=shape))
    report = channel_sparsity(model, shape)
    result = compact(model, shape)
    small = result.model
    assert result.max_abs_diff <= 1e-5
    assert result.params_after < result.params_before and result.macs_after < result.macs_before
    assert result.channels_removed == report.closed > 0
    assert not any(n.endswith(("_orig", "_mask")) for n, _ in small.state_dict().items())
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(outputs(model, x), outputs(small, x), rtol=0, atol=1e-5)
    after = channel_sparsity(small, shape)
    assert after.closed == 0 and after.channels == report.channels - report.closed
    json.dumps(result.to_dict())
    assert any(n.endswith("_orig") for n, _ in model.named_parameters())  # the original is left masked


def test_residual_group_removed_as_a_whole_only() -> None:
    model = build("preact_resnet18")
    # one row of one coupled producer: the residual stream still carries the channel, nothing may go
    mask = torch.ones_like(model.layer1[0].conv2.weight, dtype=torch.bool)
    mask[5] = False
    apply_masks(model, {"layer1.0.conv2": mask})
    assert "conv1" not in compact(model, CIFAR).removed
    # the whole group, named by any of its producers: every coupled producer, BN and consumer is masked
    zero_channels(model, CIFAR, {"layer1.0.conv2": [0, 1]})
    for producer in (model.conv1, model.layer1[0].conv2, model.layer1[1].conv2):
        assert not producer.weight_mask[[0, 1]].any()
    for bn in (model.layer1[0].bn1, model.layer1[1].bn1, model.layer2[0].bn1):
        assert not bn.weight_mask[[0, 1]].any() and not bn.bias_mask[[0, 1]].any()
    result = compact(model, CIFAR)
    assert result.removed == {"conv1": 2}
    small = result.model
    assert small.conv1.out_channels == 62 and small.layer2[0].shortcut[0].in_channels == 62
    assert result.max_abs_diff <= 1e-5


def test_unstructured_masks_remove_nothing() -> None:
    model = build("digits_cnn")
    apply_masks(model, global_magnitude(model, 0.6))
    result = compact(model, DIGITS)
    assert result.removed == {} and result.channels_removed == 0
    assert result.params_after == result.params_before and result.macs_after == result.macs_before


def test_zero_weights_with_nonzero_bias_are_kept() -> None:
    model = build("digits_cnn")
    mask = torch.ones_like(model.features[0].weight, dtype=torch.bool)
    mask[3] = False  # filter 3 all zero, its bias (and the consumer columns) untouched: it emits ReLU(b)
    apply_masks(model, {"features.0": mask})
    with torch.no_grad():
        model.features[0].bias[3] = 0.5
    assert channel_sparsity(model, DIGITS).closed == 0
    result = compact(model, DIGITS)
    assert result.removed == {} and result.model.features[0].out_channels == 32


def test_channel_mixing_op_is_caught() -> None:
    net = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1), nn.Linear(3, 2))  # softmax mixes channels
    zero_channels(net, (4,), {"0": [0]})
    with pytest.raises(RuntimeError, match="max abs difference"):
        compact(net, (4,))


@pytest.mark.parametrize("name", ["vgg11", "digits_cnn"])
def test_checkpoint_round_trip_keeps_structured_masks(name: str, tmp_path: Path) -> None:
    shape = ARCHS[name][0]
    model = build(name)
    apply_structured(model, shape, PRUNING_CRITERIA.get("channel_l1")(model, 0.3, input_shape=shape))
    before = channel_sparsity(model, shape)
    info = save_checkpoint(model, tmp_path / "m.safetensors")
    # bias masks (digits_cnn layers have biases) and BatchNorm masks (vgg11: conv features.i, BN features.i+1)
    layer = next(lc.layer for lc in before.layers if lc.n_closed)
    if name == "vgg11":
        bn = f"features.{int(layer.split('.')[1]) + 1}"
        wanted = {f"{bn}.weight", f"{bn}.bias"}
    else:
        wanted = {f"{layer}.bias"}
    assert wanted <= set(info.masked)
    loaded, _ = load_checkpoint(build(name, seed=1), tmp_path / "m.safetensors")
    assert wanted <= {n.removesuffix("_mask") for n, _ in loaded.named_buffers()}
    assert channel_sparsity(loaded, shape).to_dict() == before.to_dict()
    result = compact(loaded, shape)
    assert result.channels_removed == before.closed and result.max_abs_diff <= 1e-5
    x = torch.rand(2, *shape)
    assert torch.allclose(outputs(model, x), outputs(result.model, x), rtol=0, atol=1e-5)


def test_dio_random_mode_compacts_every_head() -> None:
    model = build("dio_digits_cnn")
    assert model.mode == "random"
    apply_structured(model, DIGITS, PRUNING_CRITERIA.get("channel_l1")(model, 0.5, input_shape=DIGITS))
    result = compact(model, DIGITS)
    small = result.model
    assert small.feature_dim == small.heads[0].in_features < 128
    x = torch.rand(2, *DIGITS)
    with torch.no_grad():
        assert torch.allclose(model.all_head_logits(x), small.all_head_logits(x), rtol=0, atol=1e-5)
    assert small.mode == "random"
