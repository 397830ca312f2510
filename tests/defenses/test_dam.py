"""DAM (DiscriminAtive Masking): gates close channels in index order, the control lands on the target within one
channel per layer, and the converted (and compacted) model computes what the gated one did."""

from __future__ import annotations

import pytest
import torch

from robustprune.data import Dataset, as_dataset
from robustprune.defenses.base import load_recipe
from robustprune.defenses.dam import DAM, DamGate, GatedModel, exact_sites, gate_sites
from robustprune.defenses.pipeline import train_model
from robustprune.errors import UsageError
from robustprune.models import build_model
from robustprune.sparsity import measuring
from robustprune.sparsity.compact import compact
from robustprune.sparsity.structured import channel_sparsity, zero_channels

FAST = ["train.probe_steps=2", "train.probe_size=32"]


def _small(data: Dataset, n: int) -> Dataset:
    return as_dataset(data.x[:n], data.y[:n], num_classes=10, name="digits-small", split=data.split)


def test_gates_close_in_index_order() -> None:
    gate = DamGate(10)
    seen = []
    for beta in torch.linspace(1.0, -5.0, 61):
        with torch.no_grad():
            gate.beta.fill_(float(beta))
        closed = (gate.gate() == 0).tolist()
        k = sum(closed)
        assert closed == [True] * k + [False] * (10 - k)  # always a prefix: channel i closes before i + 1
        assert k == gate.closed()
        seen.append(k)
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == 10
    for k in range(11):
        with torch.no_grad():
            gate.beta.fill_(gate.beta_closing(k))
        assert gate.closed() == k


@pytest.mark.parametrize(
    ("architecture", "shape", "expected"),
    [("digits_cnn", (1, 8, 8), 3), ("vgg11", (3, 32, 32), 8), ("preact_resnet18", (3, 32, 32), 8)],
)
def test_gate_sites_are_exact_and_skip_residual_paths(architecture: str, shape: tuple, expected: int) -> None:
    torch.manual_seed(0)
    model = build_model(architecture, 10, shape)
    sites = exact_sites(model, gate_sites(model, shape), shape)
    assert len(sites) == expected
    if architecture == "preact_resnet18":  # the stem feeds the first residual sum: never gated
        assert "conv1" not in {s.producer for s in sites}


def test_converted_and_compacted_model_equals_the_gated_one() -> None:
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, (1, 8, 8))
    sites = gate_sites(model, (1, 8, 8))
    gated = GatedModel(model, sites, alpha=1.0)
    with torch.no_grad():
        for gate, k in zip(gated.gates.values(), (5, 20, 100), strict=True):
            gate.beta.fill_(gate.beta_closing(k) + 0.01)  # open gates take values strictly between 0 and 1
    x = torch.rand(16, 1, 8, 8)
    with measuring(model):
        reference = model(x)
    closed = gated.convert()
    assert {k: len(v) for k, v in closed.items()} == {"features.0": 5, "features.2": 20, "classifier.0": 100}
    zero_channels(model, (1, 8, 8), closed)
    with measuring(model):
        assert torch.allclose(model(x), reference, atol=1e-5)
    small = compact(model, (1, 8, 8))
    assert small.removed == {"features.0": 5, "features.2": 20, "classifier.0": 100}
    assert small.params_after < small.params_before and small.macs_after < small.macs_before
    with measuring(small.model):
        assert torch.allclose(small.model(x), reference, atol=1e-5)


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_dam_reaches_the_channel_target_within_one_channel_per_layer(
    sparsity: float, digits_train: Dataset, digits_test: Dataset
) -> None:
    artifact, manifest = train_model("dam", sparsity=sparsity, epochs=4, overrides=FAST)
    report = channel_sparsity(artifact.model, (1, 8, 8))
    for layer in report.layers:
        assert abs(layer.n_closed - sparsity * layer.channels) <= 1, layer
    assert manifest["sparsity"]["target_unit"] == "channels"
    assert manifest["sparsity"]["channels"]["sparsity"] == pytest.approx(report.sparsity)
    converted = next(e for e in manifest["pruning_events"] if e["event"] == "gates_converted")
    assert converted["max_abs_diff"] <= 1e-4
    assert not any(name.endswith("dam_gate.beta") for name in artifact.model.state_dict())  # plain architecture
    assert all("dam_closed" in entry and "dam_lambda" in entry for entry in manifest["log"])


def test_dam_refuses_a_parent_and_a_pruning_table() -> None:
    with pytest.raises(UsageError, match="pruning"):
        load_recipe("dam", ["pruning.criterion=channel_l1"])
    with pytest.raises(UsageError, match="cold_epochs"):
        load_recipe("dam", ["train.epochs=1"])
    model = build_model("digits_cnn", 10, (1, 8, 8))
    with pytest.raises(UsageError, match="--parent"):
        DAM(load_recipe("dam")).run(model, None, None, sparsity=0.5, parent=model, seed=0)  # type: ignore[arg-type]


def test_dam_refuses_what_it_cannot_do_before_training() -> None:
    recipe = load_recipe("dam")
    with pytest.raises(UsageError, match="multi-head"):
        DAM(recipe).run(build_model("dio_digits_cnn", 10, (1, 8, 8)), None, None, sparsity=0.5, parent=None, seed=0)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="close all"):
        train_model("dam", sparsity=0.99, epochs=2, overrides=FAST)
