"""The engine never changes the model it attacks: every forward pass in eval mode, buffers bit-identical after.

Regression for the train-mode leak: torchattacks restores the mode of the model it is handed, and a counting
wrapper that reported train mode made it switch the user's BatchNorm/Dropout model into train mode.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustprune.attacks import ATTACKS, load_battery, run_battery
from robustprune.attacks.counting import CountingModel
from robustprune.config import AttackSpec, BatterySpec, ThreatModel, battery_dirs
from robustprune.errors import VerificationError
from robustprune.scoring import score


def bn_dropout_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(8 * 16, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


@pytest.fixture(scope="module")
def bn_state(digits_train) -> dict[str, torch.Tensor]:
    """A BatchNorm + Dropout CNN trained for a few epochs, so attacks have survivors to work on."""
    torch.manual_seed(0)
    model = bn_dropout_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for start in range(0, len(digits_train), 64):
            loss = nn.functional.cross_entropy(
                model(digits_train.x[start : start + 64]), digits_train.y[start : start + 64]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


class ModeRecorder:
    """Records the `training` flag of every module at every forward call."""

    def __init__(self, model: nn.Module) -> None:
        self.seen: list[tuple[str, bool]] = []
        self.handles = [
            m.register_forward_pre_hook(lambda mod, _inp, name=name: self.seen.append((name, mod.training)))
            for name, m in model.named_modules()
        ]

    def train_mode_calls(self) -> list[str]:
        return sorted({name or "<model>" for name, training in self.seen if training})


def fresh(bn_state) -> nn.Module:
    model = bn_dropout_cnn()
    model.load_state_dict(bn_state)
    return model.eval()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor], recorder: ModeRecorder) -> None:
    assert recorder.seen, "no forward pass was recorded: the check would be vacuous"
    assert recorder.train_mode_calls() == []
    for name, buffer in model.named_buffers():
        assert torch.equal(before[name], buffer), f"buffer {name} changed"
    assert not any(m.training for m in model.modules())


def test_the_counting_wrapper_reports_and_keeps_the_wrapped_mode():
    model = bn_dropout_cnn().eval()
    wrapper = CountingModel(model)
    assert wrapper.training is False
    wrapper.train()  # what torchattacks does when it saw training=True
    assert model.training is False and not any(m.training for m in model.modules())
    model.train()
    assert wrapper.training is True  # it mirrors, it does not own a mode


ATTACK_NAMES = sorted(n for n in ATTACKS.names() if not n.startswith("test_"))


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_leaves_a_batchnorm_dropout_model_untouched(name, bn_state, digits_test):
    model = fresh(bn_state)
    data = digits_test.subset(8)
    before, recorder = snapshot(model), ModeRecorder(model)
    # AutoAttack's budget is fixed; a wide eps ends it early (its later attacks skip when nothing survives).
    eps = 0.3 if name == "autoattack" else 0.05
    spec = BatterySpec(
        name="one", threat=ThreatModel(norm="Linf", eps=eps), attacks=(AttackSpec(name=name, params=_cheap(name)),)
    )
    parent = fresh(bn_state).eval() if name == "transfer_pgd" else None  # it crafts on a parent model
    points = {0: data.x[0].clone()} if name == "replay" else None  # replay needs points to hand back
    out = run_battery(model, data.x, data.y, spec, num_classes=10, seed=0, batch_size=4, parent=parent, points=points)
    assert out.records[0].n_attempted > 0, "the attack did not run: the check would be vacuous"
    assert_unchanged(model, before, recorder)


def _cheap(name: str) -> dict:
    """Fewer iterations where an attack has them: the property under test does not depend on the budget."""
    cls = ATTACKS.get(name)
    cheap = {"steps": 5, "n_queries": 50}
    return {k: v for k, v in cheap.items() if k in cls.defaults}


SHIPPED = sorted({p.stem for d in battery_dirs() for p in d.glob("*.toml")})


@pytest.mark.parametrize("battery", SHIPPED)
def test_every_shipped_battery_leaves_the_model_untouched(battery, bn_state, digits_test):
    model = fresh(bn_state)
    before, recorder = snapshot(model), ModeRecorder(model)
    # The attacks themselves are covered one by one above; a wide eps keeps the full budgets of the shipped
    # batteries (Square's 5000 queries on survivors) from dominating the suite's time.
    doc = score(model, digits_test.subset(6), battery, eps=0.3, batch_size=3, seed=0).document
    assert sum(a["n_attempted"] for a in doc["attacks"]) > 0
    assert_unchanged(model, before, recorder)
    assert not [w for w in doc["warnings"] if w["check"] == "S3"]


def test_each_module_keeps_its_own_flag_after_scoring(bn_state, digits_test):
    """A model handed over with one BatchNorm in train mode is scored in eval mode and given back as it was."""
    model = fresh(bn_state)
    model[1].train()
    flags = [m.training for m in model.modules()]
    recorder = ModeRecorder(model)
    doc = score(model, digits_test.subset(10), "quick", eps=0.05, seed=0).document
    assert recorder.train_mode_calls() == []
    assert [m.training for m in model.modules()] == flags
    assert any(w["check"] == "S3" and "1" in w["message"] for w in doc["warnings"])


def test_an_attack_that_switches_the_model_to_train_mode_is_not_counted(bn_state, digits_test):
    from robustprune.attacks.base import Attack, register_attack

    @register_attack("test_switches_mode")
    class SwitchesMode(Attack):
        def perturb_batch(self, model, x, y, *, seed, batch_size):
            model.model.train()  # reaches past the wrapper, as a careless adapter might
            return x.clone()

    model = fresh(bn_state)
    data = digits_test.subset(8)
    spec = BatterySpec(
        name="t", threat=ThreatModel(norm="Linf", eps=0.05), attacks=(AttackSpec(name=SwitchesMode.name),)
    )
    with pytest.raises(VerificationError, match="switched to train mode"):
        run_battery(model, data.x, data.y, spec, num_classes=10, seed=0)


def test_a_model_that_updates_its_buffers_in_eval_mode_is_refused(digits_test):
    from robustprune.errors import UsageError

    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x):
            self.calls += 1
            return self.net(x)

    data = digits_test.subset(8)
    with pytest.raises(UsageError, match="changes its own state"):
        run_battery(Counter().eval(), data.x, data.y, load_battery("quick"), num_classes=10, seed=0)
