"""The seed methods of issue 12 beyond the first defenses: Activating-while-Pruning (AP) and the dynamic
dead-neuron rate, Scratch-B's compute budget, and HYDRA's learned mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from robustprune.data import Dataset, as_dataset
from robustprune.defenses.base import PruningSpec, load_recipe
from robustprune.defenses.pipeline import save_trained, train_model
from robustprune.defenses.pruning_driver import prune_round_with_ap, prune_to, train_with_pruning
from robustprune.defenses.train_loop import TrainSpec, cross_entropy, fit
from robustprune.errors import UsageError
from robustprune.metrics.activity import TrainModeDeadRate, dead_relu_rate
from robustprune.models import build_model, load_checkpoint
from robustprune.sparsity import current_masks, global_magnitude, sparsity_report
from robustprune.sparsity.activate import ap_masks, snapshot_weights

FAST = ["train.probe_steps=2", "train.probe_size=32"]


@pytest.fixture(scope="module")
def parent_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifact, manifest = train_model("dense", epochs=2, overrides=FAST)
    return Path(save_trained(artifact, manifest, tmp_path_factory.mktemp("parent")).path)


def _small(data: Dataset, n: int) -> Dataset:
    return as_dataset(data.x[:n], data.y[:n], num_classes=10, name="digits-small", split=data.split)


# ------------------------------------------------------------------------------------------------------------ AP


def test_ap_removes_exactly_its_share_of_alive_negative_weights_that_moved_least() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", 10, (1, 8, 8))
    spec = PruningSpec(schedule="iterative", rounds=2, ap_share=0.05)
    prune_to(model, spec, 0.3)
    names = [
        n for n, _ in model.named_modules() if isinstance(n, str) and hasattr(model.get_submodule(n), "weight_mask")
    ]
    start = snapshot_weights(model, names)
    with torch.no_grad():  # a "round of training": every weight moves by a known amount
        for module in (model.get_submodule(n) for n in names):
            module.weight_orig.add_(torch.randn_like(module.weight_orig) * 0.01)
    before = current_masks(model)
    alive = sum(int(before[n].sum()) for n in names)
    record = prune_round_with_ap(model, spec, 0.6, start)
    assert record["ap_removed"] == round(0.05 * alive) > 0 and record["alive_before"] == alive
    assert abs(sparsity_report(model)["sparsity"] - 0.6) < 1e-4  # the round lands on its target exactly
    assert record["base_removed"] + record["ap_removed"] == round(0.6 * sum(before[n].numel() for n in names)) - sum(
        int((~before[n]).sum()) for n in names
    )


def test_ap_selection_picks_negative_survivors_with_the_smallest_move() -> None:
    layer = nn.Linear(4, 1, bias=False)
    model = nn.Sequential(layer)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.0, -2.0, 3.0, -4.0]]))
    start = snapshot_weights(model, ["0"])
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.5, -2.01, 3.0, -4.2]]))  # moved 0.5, 0.01, 0 (positive), 0.2
    masks = ap_masks(model, start, 2)
    assert masks["0"].tolist() == [[True, False, True, False]]  # the two negative ones that moved least
    with pytest.raises(UsageError, match="only 3 alive negative"):
        ap_masks(model, start, 4)


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_magnitude_ap_recipe_hits_its_target_and_logs_every_round(parent_ckpt: Path, sparsity: float) -> None:
    _, manifest = train_model("magnitude_ap", sparsity=sparsity, parent=parent_ckpt, epochs=4, overrides=FAST)
    assert abs(manifest["sparsity"]["achieved"] - sparsity) <= 0.005
    rounds = [e for e in manifest["pruning_events"] if e["event"] == "prune"]
    assert len(rounds) == 4 and "ap_removed" not in rounds[0]  # round 1 has no trained round behind it
    for event in rounds[1:]:
        assert event["ap_removed"] == round(0.04 * event["alive_before"])
        assert abs(event["achieved"] - event["target"]) <= 1e-4
    assert manifest["pruning"]["ap_share"] == 0.04


def test_ap_share_needs_rounds() -> None:
    with pytest.raises(UsageError, match="rounds"):
        PruningSpec(schedule="agp", ap_share=0.02)
    with pytest.raises(UsageError, match=r"\[0, 1\)"):
        PruningSpec(schedule="iterative", ap_share=1.5)
    assert "ap_share" not in PruningSpec().to_dict()  # run names of existing recipes do not change


# ---------------------------------------------------------------------------------------------- dynamic DNR


class _DropBeforeRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Dropout(0.5), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_dynamic_dead_rate_counts_train_mode_passes_only(digits_train: Dataset) -> None:
    torch.manual_seed(0)
    model = _DropBeforeRelu()
    x = digits_train.x[:256]
    meter = TrainModeDeadRate(model)
    with meter:
        model.eval()
        model(x)  # not counted: eval mode
        assert meter.rates()[0] is None
        model.train()
        model(x)
    train_rate, layers = meter.rates()
    eval_rate = dead_relu_rate(model, x)
    assert set(layers) == {"body.3"} and layers["body.3"] == train_rate
    assert train_rate > eval_rate + 0.2  # dropout zeroes half the pre-activations in train mode only
    model(x)  # the hooks are gone after the block
    assert meter.rates()[0] == train_rate


def test_every_epoch_logs_the_dynamic_rate_per_layer(digits_train: Dataset, digits_test: Dataset) -> None:
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, (1, 8, 8))
    spec = TrainSpec(epochs=2, probe_steps=1, probe_size=16)
    log = fit(model, _small(digits_train, 128), _small(digits_test, 32), spec, loss=cross_entropy)
    for entry in log:
        assert 0 < entry["dead_relu_rate_train"] < 1
        assert set(entry["dead_relu_rate_train_layers"]) == {"features.1", "features.3", "classifier.1"}


# ------------------------------------------------------------------------------------------------ Scratch-B


def test_scratch_b_trains_for_the_dense_compute_budget(
    parent_ckpt: Path, digits_train: Dataset, digits_test: Dataset
) -> None:
    recipe = load_recipe("scratch_b", [*FAST, "train.epochs=2"])
    parent, _ = load_checkpoint(build_model("digits_cnn", 10, (1, 8, 8)), parent_ckpt)
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, (1, 8, 8))
    artifact = train_with_pruning(
        model,
        _small(digits_train, 128),
        _small(digits_test, 32),
        recipe,
        loss=cross_entropy,
        sparsity=0.9,
        parent=parent,
        seed=0,
    )
    pruned = sparsity_report(model, (1, 8, 8))
    ratio = pruned["macs_dense"] / pruned["macs_effective"]
    budget = next(e for e in artifact.extra["pruning_events"] if e["event"] == "scratch_b_budget")
    assert budget["macs_ratio"] == pytest.approx(ratio) and ratio > 1.5
    assert budget["epochs"] == round(2 * ratio) == len(artifact.log)
    lrs = [e["lr"] for e in artifact.log]
    assert lrs[0] == pytest.approx(recipe.train.lr) and lrs[-1] == pytest.approx(recipe.train.lr * 0.01)
    assert {
        k: torch.equal(v, global_magnitude(parent, 0.9)[k]) for k, v in current_masks(model).items()
    } == dict.fromkeys(current_masks(model), True)


def test_reinit_budget_needs_reinit() -> None:
    with pytest.raises(UsageError, match="reinit = true"):
        PruningSpec(reinit_budget="compute")


# ------------------------------------------------------------------------------------------------------ HYDRA


def test_hydra_mask_comes_from_learned_scores_not_magnitudes(
    parent_ckpt: Path, digits_train: Dataset, digits_test: Dataset
) -> None:
    from robustprune.defenses import hydra

    parent, _ = load_checkpoint(build_model("digits_cnn", 10, (1, 8, 8)), parent_ckpt)
    recipe = load_recipe("hydra", [*FAST, "settings.steps=1", "settings.score_epochs=2"])
    defense = hydra.Hydra(recipe)
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, (1, 8, 8))
    model.load_state_dict(parent.state_dict())
    scored = hydra.attach_scores(model, 0.8)
    magnitude = {n: s.mask() for n, s in scored.items()}
    fit(model, _small(digits_train, 256), _small(digits_test, 32), recipe.train, loss=defense.make_loss(digits_train))
    learned_scores = {n: s.scores.detach().clone() for n, s in scored.items()}
    masks = hydra.detach_scores(model, scored)
    for name, mask in masks.items():
        keep = int(mask.sum())
        top = torch.zeros(mask.numel(), dtype=torch.bool)
        top[torch.argsort(learned_scores[name].abs().flatten(), descending=True, stable=True)[:keep]] = True
        assert torch.equal(mask.flatten(), top)  # the mask is the top-k of the learned scores
        assert keep == magnitude[name].sum()  # layer-wise: each layer keeps its share
    assert sum(int((masks[n] != magnitude[n]).sum()) for n in masks) > 0  # and it is not the magnitude mask
    # the weights themselves never moved during the score stage
    theirs = parent.state_dict()
    assert all(torch.equal(p, theirs[name]) for name, p in model.state_dict().items())


def test_hydra_recipe_trains_to_target(parent_ckpt: Path) -> None:
    _, manifest = train_model(
        "hydra",
        sparsity=0.8,
        parent=parent_ckpt,
        overrides=[*FAST, "settings.steps=1", "settings.score_epochs=1", "train.epochs=1"],
    )
    assert abs(manifest["sparsity"]["achieved"] - 0.8) <= 0.005
    assert [e["stage"] for e in manifest["log"]] == ["scores", "fine_tune"]
    prune = next(e for e in manifest["pruning_events"] if e["event"] == "prune")
    assert prune["criterion"] == "hydra_scores" and prune["swapped_vs_magnitude"] >= 0
    with pytest.raises(UsageError, match="--parent"):
        train_model("hydra", sparsity=0.5, overrides=FAST)


# --------------------------------------------------------------------------- structured plans in the driver


def test_structured_parent_masks_come_along_whole() -> None:
    # a channel-pruned parent with BatchNorm: its bias and BatchNorm masks are copied too, not only weight masks
    from robustprune.defenses.pruning_driver import copy_weights

    torch.manual_seed(0)
    parent = build_model("vgg11", 10, (3, 32, 32))
    prune_to(parent, PruningSpec(criterion="layerwise_channel_l1"), 0.5)
    child = build_model("vgg11", 10, (3, 32, 32))
    copy_weights(parent, child)
    theirs = {n: b for n, b in parent.named_buffers() if n.endswith("_mask")}
    ours = {n: b for n, b in child.named_buffers() if n.endswith("_mask")}
    assert theirs.keys() == ours.keys() and any(".bias_mask" in n for n in ours)
    assert all(torch.equal(theirs[n], ours[n]) for n in ours)
    x = torch.rand(2, 3, 32, 32)
    parent.eval(), child.eval()
    assert torch.allclose(parent(x), child(x))


def test_structured_exclude_and_conv_only_land_on_the_channel_target(parent_ckpt: Path) -> None:
    for extra in (["pruning.exclude=['features.0']"], ["pruning.layers='conv'"]):
        _, manifest = train_model("structured", sparsity=0.5, parent=parent_ckpt, epochs=0, overrides=[*FAST, *extra])
        assert manifest["sparsity"]["target_unit"] == "channels"
        assert abs(manifest["sparsity"]["channels"]["sparsity"] - 0.5) <= 0.005  # over the groups the plan prunes


def test_structured_checks_before_training(parent_ckpt: Path) -> None:
    with pytest.raises(UsageError, match="close all 32 channels of features.0"):
        train_model("structured", sparsity=0.99, parent=parent_ckpt, overrides=FAST)
    with pytest.raises(UsageError, match="global criterion"):
        PruningSpec(schedule="iterative", criterion="layerwise_magnitude", ap_share=0.02)
    with pytest.raises(UsageError, match="cycle_momentum"):
        train_model(
            "scratch_b",
            sparsity=0.5,
            parent=parent_ckpt,
            overrides=[*FAST, "train.schedule='cyclic'", "train.cycle_momentum=true"],
        )


def test_structured_parent_is_compared_in_channels(tmp_path: Path, parent_ckpt: Path) -> None:
    half, manifest = train_model("structured", sparsity=0.5, parent=parent_ckpt, epochs=0, overrides=FAST)
    assert manifest["sparsity"]["achieved"] > 0.7  # 50 % of the channels is 75 % of the weights
    path = save_trained(half, manifest, tmp_path).path
    _, again = train_model("structured", sparsity=0.6, parent=path, epochs=0, overrides=FAST)  # 0.5 -> 0.6 channels
    assert abs(again["sparsity"]["channels"]["sparsity"] - 0.6) <= 0.005
    with pytest.raises(UsageError, match="share of channels pruned is already 0.50"):
        train_model("structured", sparsity=0.3, parent=path, epochs=0, overrides=FAST)


def test_guard_restores_masks_added_by_a_gradual_structured_schedule() -> None:
    from robustprune.sparsity.masks import load_masked_state, masked_state

    torch.manual_seed(0)
    model = build_model("vgg11", 10, (3, 32, 32))
    spec = PruningSpec(criterion="layerwise_channel_l1", schedule="agp")
    prune_to(model, spec, 0.0)
    snapshot = masked_state(model)
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    before = model(x)
    prune_to(model, spec, 0.3)  # adds bias, BatchNorm and consumer masks
    load_masked_state(model, *snapshot)
    assert torch.allclose(model(x), before)
