"""FGSM-RS as the reference `locuslab/fast_adversarial` runs it: the catastrophic-overfitting guard attacks the
epoch's first training batch in train mode (and leaves the model unchanged), and the CIFAR recipe's momentum cycle
(torch CyclicLR, 0.9 at lr 0, 0.8 at the lr peak) is a [train] option that keeps existing run keys."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import nn

import robustprune.defenses.fgsm_rs as fgsm_rs_module
from robustprune.data import Dataset, as_dataset
from robustprune.defenses.base import DEFENSES, load_recipe
from robustprune.defenses.fgsm_rs import guard_pgd_accuracy
from robustprune.defenses.train_loop import Callback, StepContext, TrainSpec, fit
from robustprune.errors import UsageError
from robustprune.models import build_model

NEW_TRAIN_FIELDS = ("cycle_momentum", "base_momentum")


def _small(data: Dataset, n: int) -> Dataset:
    return as_dataset(data.x[:n], data.y[:n], num_classes=10, name="digits-small", split=data.split)


def _first_batches(n: int, batch_size: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """The index of each epoch's first batch, replayed from fit's data-order generator (independent of the hook)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=generator)[:batch_size] for _ in range(epochs)]


def _bn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


# --------------------------------------------------------------------------------------------- the guard


def test_the_guard_attacks_exactly_each_epochs_first_training_batch(digits_train, digits_test, monkeypatch) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def spy(model, x, y, **kwargs) -> float:
        seen.append((x.clone(), y.clone()))
        return 0.5

    monkeypatch.setattr(fgsm_rs_module, "guard_pgd_accuracy", spy)
    recipe = load_recipe("fgsm_rs", ["train.probe_steps=1", "train.probe_size=16"])
    defense = DEFENSES.get("fgsm_rs")(recipe)
    train, val = _small(digits_train, 200), _small(digits_test, 32)
    spec = replace(recipe.train, epochs=3, batch_size=48)
    model = build_model("mlp", 10, (1, 8, 8))
    log = fit(
        model, train, val, spec, loss=defense.make_loss(train), callbacks=defense.make_callbacks(train, val, 7), seed=7
    )
    assert [e["guard_pgd_acc"] for e in log] == [0.5, 0.5, 0.5]
    expected = _first_batches(len(train), 48, 3, seed=7)
    assert len(seen) == 3
    for (x, y), idx in zip(seen, expected, strict=True):
        assert torch.equal(x, train.x[idx]) and torch.equal(y, train.y[idx])  # the batch fit drew first, whole
    assert not torch.equal(seen[0][0], seen[1][0])  # a new batch every epoch, not a fixed subset


def test_the_guard_caps_the_batch_at_guard_size(digits_train, digits_test, monkeypatch) -> None:
    sizes: list[int] = []
    monkeypatch.setattr(fgsm_rs_module, "guard_pgd_accuracy", lambda model, x, y, **kw: sizes.append(len(x)) or 0.5)
    recipe = load_recipe("fgsm_rs", ["settings.guard_size=10", "train.probe_steps=1", "train.probe_size=16"])
    defense = DEFENSES.get("fgsm_rs")(recipe)
    train = _small(digits_train, 100)
    fit(
        build_model("mlp", 10, (1, 8, 8)),
        train,
        _small(digits_test, 16),
        replace(recipe.train, epochs=1),
        loss=defense.make_loss(train),
        callbacks=defense.make_callbacks(train, train, 0),
    )
    assert sizes == [10]


def test_the_guard_pgd_runs_in_train_mode_and_leaves_the_model_unchanged(digits_train) -> None:
    model = _bn_mlp()
    model.train()
    with torch.no_grad():  # some running statistics to protect
        for i in range(3):
            model(digits_train.x[i * 64 : (i + 1) * 64])
    model.eval()  # as fit leaves it when the epoch's callbacks run
    bn = model[2]
    x, y = digits_train.x[:64], digits_train.y[:64]
    calls: list[tuple[bool, torch.Tensor]] = []
    running: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, inputs: calls.append((m.training, inputs[0].detach().clone())))
    bn.register_forward_hook(lambda m, i, o: running.append(m.running_mean.clone()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    eps = 0.1
    acc = guard_pgd_accuracy(model, x, y, eps=eps, alpha=eps / 4, steps=5, generator=torch.Generator().manual_seed(0))
    assert 0.0 <= acc <= 1.0
    assert calls and len(calls) <= 6  # at most PGD-5's forwards plus the accuracy pass
    assert all(training for training, _ in calls)  # the reference calls attack_pgd without model.eval()
    for _, seen in calls:
        assert seen.shape == x.shape  # the whole batch at once: train-mode BatchNorm uses its statistics
        assert float((seen - x).abs().max()) <= eps + 1e-6 and float(seen.min()) >= 0 and float(seen.max()) <= 1
    # train mode really moved the running statistics during the guard ...
    assert any(not torch.equal(r, before["2.running_mean"]) for r in running)
    # ... and the guard put everything back: weights, BatchNorm buffers, modes, the global RNG
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and not bn.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())


def test_the_guard_result_is_the_train_mode_accuracy_of_the_reference_attack(digits_train) -> None:
    model = _bn_mlp().eval()
    x, y = digits_train.x[:64], digits_train.y[:64]
    # zero steps: the random start alone, classified in train mode (batch statistics), not in eval mode
    start = torch.Generator().manual_seed(3)
    acc = guard_pgd_accuracy(model, x, y, eps=0.0, alpha=0.0, steps=0, generator=start)
    with torch.no_grad():
        model.train()
        expected = float((model(x).argmax(1) == y).float().mean())
        model.eval()
    assert acc == pytest.approx(expected)


def test_the_fgsm_rs_recipe_trains_with_the_guard(digits_train, digits_test) -> None:
    recipe = load_recipe("fgsm_rs", ["train.probe_steps=1", "train.probe_size=16", "train.epochs=2"])
    defense = DEFENSES.get("fgsm_rs")(recipe)
    torch.manual_seed(0)
    model = defense.build_model(10, (1, 8, 8))
    artifact = defense.run(model, _small(digits_train, 256), _small(digits_test, 64), sparsity=0.0, parent=None, seed=0)
    assert all(0.0 <= e["guard_pgd_acc"] <= 1.0 for e in artifact.log) and len(artifact.log) == 2


# --------------------------------------------------------------------------------------------- momentum cycle


class _Watch(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []

    def on_batch_begin(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> None:
        group = ctx.optimizer.param_groups[0]
        self.seen.append((group["lr"], group["momentum"]))


def _watched_fit(digits_train, digits_test, **spec_fields: Any) -> list[tuple[float, float]]:
    watch = _Watch()
    spec = TrainSpec(epochs=4, batch_size=32, lr=0.1, probe_steps=1, probe_size=16, **spec_fields)
    fit(build_model("mlp", 10, (1, 8, 8)), _small(digits_train, 160), _small(digits_test, 16), spec, callbacks=[watch])
    return watch.seen


def test_momentum_cycles_inversely_to_the_cyclic_lr(digits_train, digits_test) -> None:
    seen = _watched_fit(digits_train, digits_test, schedule="cyclic", cycle_momentum=True)
    assert len(seen) == 20
    for lr, momentum in seen:  # linear in the lr: 0.9 at lr 0, 0.8 at the peak
        assert momentum == pytest.approx(0.9 - 0.1 * lr / 0.1)
    lrs = [lr for lr, _ in seen]
    peak = lrs.index(max(lrs))
    assert seen[0][1] == pytest.approx(0.9, abs=0.006) and seen[-1][1] == pytest.approx(0.9, abs=0.006)
    assert seen[peak][1] == pytest.approx(0.8, abs=0.006) and min(m for _, m in seen) == seen[peak][1]
    # off (the default): constant momentum, as before
    assert {m for _, m in _watched_fit(digits_train, digits_test, schedule="cyclic")} == {0.9}


def test_the_momentum_cycle_equals_torch_cyclic_lr() -> None:
    total = 40
    spec = TrainSpec(schedule="cyclic", cycle_momentum=True, lr=0.2, momentum=0.9, base_momentum=0.8)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2, momentum=0.9)
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt,
        base_lr=0.0,
        max_lr=0.2,
        step_size_up=total / 2,
        step_size_down=total / 2,
        base_momentum=0.8,
        max_momentum=0.9,
    )
    for k in range(total):
        assert spec.momentum_at(k / total) == pytest.approx(opt.param_groups[0]["momentum"], abs=1e-9)
        opt.step()
        sched.step()


@pytest.mark.parametrize(
    "fields",
    [
        {"schedule": "cyclic", "optimizer": "adam"},
        {"schedule": "cosine"},
        {"schedule": "constant"},
    ],
)
def test_momentum_cycle_needs_sgd_and_the_cyclic_schedule(fields: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match="cycle_momentum needs") as err:
        TrainSpec(cycle_momentum=True, **fields)
    assert "\n" not in str(err.value)


def test_momentum_cycle_settings_are_checked() -> None:
    with pytest.raises(UsageError, match="base_momentum"):
        TrainSpec(schedule="cyclic", cycle_momentum=True, base_momentum=1.5)
    with pytest.raises(UsageError, match="must not exceed"):
        TrainSpec(schedule="cyclic", cycle_momentum=True, momentum=0.5, base_momentum=0.8)
    with pytest.raises(UsageError, match="cycle_momentum"):
        load_recipe("fgsm_rs", ["train.cycle_momentum=true", "train.optimizer=adam"])
    recipe = load_recipe("fgsm_rs", ["train.cycle_momentum=true"])
    assert recipe.train.cycle_momentum and recipe.train.base_momentum == 0.8
    assert not load_recipe("fgsm_rs").train.cycle_momentum  # the digits recipe keeps a constant momentum


def test_the_new_train_fields_keep_existing_keys() -> None:
    def old_dict(spec: TrainSpec) -> dict[str, Any]:  # TrainSpec.to_dict before the momentum cycle existed
        return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in NEW_TRAIN_FIELDS}

    for name in ("fgsm_rs", "dense", "pgd_at", "deadwooding"):
        recipe = load_recipe(name)
        assert recipe.to_dict()["train"] == old_dict(recipe.train)
    cycled = TrainSpec(schedule="cyclic", cycle_momentum=True).to_dict()
    assert cycled["cycle_momentum"] is True and cycled["base_momentum"] == 0.8
    assert TrainSpec(base_momentum=0.7).to_dict()["base_momentum"] == 0.7  # a changed value changes the key
    assert math.isclose(TrainSpec().momentum_at(0.5), 0.9)
