"""The Python API `robustprune.scoring.score`: result document, invariants, sanity warnings, bad input."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.defenses.pipeline import train_model
from robustprune.errors import UsageError
from robustprune.models import build_model, load_checkpoint, save_checkpoint
from robustprune.results.schema import validate_document
from robustprune.scoring import score


def test_result_has_per_sample_table_and_derived_aggregates(trained_mlp, digits_test):
    result = score(trained_mlp, digits_test, "quick", eps=0.1, n=60, batch_size=32)
    doc = result.document
    validate_document(doc)
    table = doc["per_sample"]
    assert table["index"] == list(range(60))
    assert table["label"] == digits_test.y[:60].tolist()
    # Every aggregate is derived from the per-sample table.
    assert doc["clean_acc"] == pytest.approx(100 * np.mean(table["clean_correct"]))
    assert doc["robust_acc"] == pytest.approx(100 * (1 - np.mean(table["broken"])))
    assert doc["attacks"][-1]["robust_acc"] == pytest.approx(doc["robust_acc"])
    lo, hi = doc["robust_acc_ci"]
    assert lo <= doc["robust_acc"] <= hi
    assert doc["robust_acc"] <= doc["clean_acc"]
    assert doc["autoattack_acc"] is None  # the quick battery is not AutoAttack
    assert doc["provenance"]["seed"] == 0 and doc["provenance"]["versions"]["torchattacks"]
    assert doc["calibration"]["clean"]["ece"]["n_bins"] == 15
    assert doc["sparsity"]["sparsity"] == 0.0
    assert result.clean_probs.shape == result.adversarial_probs.shape == (60, 10)


def test_eps_zero_robust_equals_clean(trained_mlp, digits_test):
    doc = score(trained_mlp, digits_test, "quick", eps=0.0, n=80).document
    assert doc["robust_acc"] == doc["clean_acc"]


def test_repeat_with_same_seed_is_identical(trained_mlp, digits_test):
    a = score(trained_mlp, digits_test, "quick", eps=0.1, n=50, seed=7).document
    b = score(trained_mlp, digits_test, "quick", eps=0.1, n=50, seed=7).document
    assert a["per_sample"] == b["per_sample"]
    assert a["calibration"] == b["calibration"]


def test_probability_output_is_warned(trained_mlp, digits_test):
    model = nn.Sequential(trained_mlp, nn.Softmax(dim=1))
    doc = score(model, digits_test, "quick", eps=0.05, n=30).document
    assert any(w["check"] == "S1" and "probabilities" in w["message"] for w in doc["warnings"])


class NoisyModel(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + 3.0 * torch.randn(len(x), 10)


def test_randomized_forward_is_detected_and_scored_over_repeated_passes(trained_mlp, digits_test):
    doc = score(NoisyModel(trained_mlp), digits_test, "quick", eps=0.05, n=30).document
    assert doc["randomized"] is True and doc["n_eval_passes"] > 1
    assert any(w["check"] == "S2" for w in doc["warnings"])


def test_train_mode_model_is_scored_in_eval_mode_with_a_warning(digits_test):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 10)).train()
    doc = score(model, digits_test, "quick", eps=0.05, n=30).document
    assert any(w["check"] == "S3" for w in doc["warnings"])
    assert doc["randomized"] is False  # dropout was off while scoring
    assert model.training  # the caller's mode is restored


def test_tensors_are_accepted_and_validated(trained_mlp, digits_test):
    x, y = digits_test.x[:20], digits_test.y[:20]
    assert score(trained_mlp, (x, y), "quick", eps=0.05).document["n_examples"] == 20
    with pytest.raises(UsageError, match=r"outside \[0,1\]"):
        score(trained_mlp, (x * 255, y), "quick", eps=0.05)
    bad = x.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(UsageError, match="NaN|finite"):
        score(trained_mlp, (bad, y), "quick", eps=0.05)


@pytest.mark.parametrize("eps,message", [(-0.1, "negative"), (math.nan, "finite"), (3.0, "absurd")])
def test_bad_eps(trained_mlp, digits_test, eps, message):
    with pytest.raises(UsageError, match=message):
        score(trained_mlp, digits_test, "quick", eps=eps, n=10)


def test_l2_eps_beyond_the_box_is_bad_input(trained_mlp, digits_test):
    with pytest.raises(UsageError, match="diameter"):
        score(trained_mlp, digits_test, "quick", norm="L2", eps=9.0, n=10)


def test_n_beyond_dataset(trained_mlp, digits_test):
    with pytest.raises(UsageError, match="beyond the dataset"):
        score(trained_mlp, digits_test, "quick", n=10_000)


def test_unknown_battery(trained_mlp, digits_test):
    with pytest.raises(UsageError, match="unknown battery 'quik'"):
        score(trained_mlp, digits_test, "quik", n=10)


def test_a_battery_spec_keeps_its_attacks_when_the_threat_is_overridden(trained_mlp, digits_test):
    # A spec that no battery file bears the name of (e.g. a sweep's stored head battery on another machine).
    spec = BatterySpec(
        name="not-a-file",
        threat=ThreatModel(norm="Linf", eps=0.3),
        attacks=(AttackSpec(name="fgsm", label="only-fgsm"),),
    )
    doc = score(trained_mlp, digits_test, spec, eps=0.05, n=20, seed=0).document
    assert doc["eps"] == 0.05 and doc["norm"] == "Linf" and doc["battery"] == "not-a-file"
    assert [a["label"] for a in doc["attacks"] if a["role"] == "battery"] == ["only-fgsm"]


def test_s19_compares_the_train_manifests_accuracy_only_on_the_data_it_was_measured_on(tmp_path, digits_test):
    artifact, manifest = train_model("dense", epochs=3, seed=0)
    path = tmp_path / "model.safetensors"
    save_checkpoint(artifact.model, path, manifest=manifest)
    model, info = load_checkpoint(build_model("digits_cnn", 10, (1, 8, 8)), path)
    checkpoint = info.to_dict()

    def s19(data, checkpoint):
        return score(model, data, "quick", n=40, seed=0, checkpoint=checkpoint).health.check("S19")

    same = s19("digits", checkpoint)  # the first 40 of the split the manifest's val_acc was measured on
    assert same.status == "pass" and same.value == pytest.approx(100 * manifest["final"]["val_acc"])
    other = s19((digits_test.x[40:120], digits_test.y[40:120]), checkpoint)
    assert other.status == "skip"  # other data: the recorded accuracy says nothing about it
    tampered = copy.deepcopy(checkpoint)
    tampered["manifest"]["final"]["val_acc"] = manifest["final"]["val_acc"] - 0.4
    failed = s19("digits", tampered)
    assert failed.status == "fail" and "outside" not in failed.message and "measured interval" in failed.message
