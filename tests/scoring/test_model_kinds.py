"""Models that used to break or flatter scoring: a graph cut to the input, noise in the forward pass, a factory
that returns train mode."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from broken_models import Noisy, NumpyFlattened

from robustprune.attacks import run_battery
from robustprune.cli import main
from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.scoring import RANDOMIZED_PASSES, EscalationBudget, score


@pytest.mark.parametrize("battery", ["quick", "autoattack"])
def test_a_model_with_a_cut_graph_is_scored_by_gradient_free_attacks_and_says_so(battery, trained_mlp, digits_test):
    budget = EscalationBudget(square_queries=300)
    result = score(
        NumpyFlattened(trained_mlp).eval(), digits_test.subset(24), battery, eps=0.1, seed=0, escalation_budget=budget
    )
    doc = result.document
    attacks = {a["label"]: a for a in doc["attacks"] if a["role"] == "battery"}
    gradient_attacks = [a for a in attacks.values() if a["name"] != "square"]
    assert gradient_attacks and all(a["skipped"] and "S6" in a["skipped"] for a in gradient_attacks)
    assert all(a["n_attempted"] == 0 for a in gradient_attacks)
    square = attacks["square"]
    assert square["skipped"] is None and square["n_attempted"] > 0 and square["n_broken"] > 0
    assert doc["robust_acc"] < doc["clean_acc"]  # a real attack ran
    assert doc["autoattack_acc"] is None  # AutoAttack could not run, so it has no number
    assert doc["verdict"] == "untrusted"
    assert [a["check"] for a in doc["alerts"]] == ["verdict", "S6"]
    assert "GRADIENT ATTACKS COULD NOT RUN" in doc["alerts"][1]["message"]
    # the gradient-free escalation still ran, on what the battery left, and says why
    escalation = {e["name"]: e for e in doc["health"]["escalations"]}["more_queries"]
    assert escalation["triggered_by"][0] == "S6" and escalation["n_attempted"] > 0
    assert doc["provenance"]["battery_additions"][-1]["attack"] == "square"
    assert any(w["check"] == "S6" for w in doc["warnings"])
    # the cut was located, but no straight-through version of it restores a gradient: BPDA cannot run either
    s23 = {c["id"]: c for c in doc["health"]["checks"]}["S23"]
    assert s23["status"] == "fail" and "detach" in s23["message"] and "no straight-through" in s23["message"]
    bpda = {e["name"]: e for e in doc["health"]["escalations"]}["bpda"]
    assert bpda["skipped"] and bpda["n_attempted"] == 0


def test_the_cli_puts_the_cut_graph_alert_first(trained_mlp, tmp_path, monkeypatch, capsys):
    module = tmp_path / "cut_graph_model.py"
    module.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            from robustprune.models import build_model

            class Detached(nn.Module):
                def __init__(self, inner):
                    super().__init__()
                    self.inner = inner

                def forward(self, x):  # through numpy, flattened: a cut no straight-through version can bridge
                    flat = torch.tensor(x.detach().numpy().reshape(len(x), -1))
                    return self.inner(flat.view_as(x))

            def factory(num_classes, input_shape, mean=None, std=None):
                return Detached(build_model("mlp", num_classes, input_shape))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    args = ["score", "--model", "cut_graph_model:factory", "--battery", "quick", "--n", "16", "--out", str(out)]
    code = main(args)
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert stdout.startswith("VERDICT: UNTRUSTED")
    assert "!! S6: GRADIENT ATTACKS COULD NOT RUN" in stdout.split("\nmlp")[0]  # before any number
    report = (out / "report.md").read_text()
    assert report.split("\n")[2].startswith("## VERDICT: UNTRUSTED")
    assert report.index("GRADIENT ATTACKS COULD NOT RUN") < report.index("## Headline")
    assert "GRADIENT ATTACKS COULD NOT RUN" in (out / "report.html").read_text()
    sys.modules.pop("cut_graph_model", None)


def test_autoattack_on_a_noisy_model_is_no_higher_than_an_eot_attack(trained_mlp, digits_test):
    """On a randomized model AutoAttack's standard version keeps the clean input wherever one noisy pass missed
    the break; the `autoattack` battery must not report more than an EOT attack finds on the same examples."""
    model = Noisy(trained_mlp, sigma=0.15).eval()
    data = digits_test.subset(60)
    doc = score(model, data, "autoattack", eps=0.1, seed=0).document
    assert doc["randomized"] and doc["autoattack_acc"] is None
    aa = next(a for a in doc["attacks"] if a["name"] == "autoattack")
    assert aa["settings"]["version"] == "rand"

    # The test's own EOT attack: torchattacks' EOT-PGD, judged like the engine judges (every one of 10 passes).
    eot = BatterySpec(
        name="eot",
        threat=ThreatModel(norm="Linf", eps=0.1),
        attacks=(AttackSpec(name="eot_pgd", params={"steps": 40, "eot_iter": 20}),),
    )
    torch.manual_seed(1)
    out = run_battery(model, data.x, data.y, eot, num_classes=10, seed=1, n_passes=RANDOMIZED_PASSES)
    eot_robust = int((~out.broken).sum())
    ours = round(doc["robust_acc"] * len(data) / 100)
    assert eot_robust < out.clean.correct.sum()  # the EOT attack did break examples
    assert ours <= eot_robust + 1


FACTORIES = """
from torch import nn

def with_dropout(num_classes, input_shape, mean=None, std=None):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, num_classes))
    return net.train()

def plain(num_classes, input_shape, mean=None, std=None):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))  # nn.Module's default: train mode
"""


@pytest.mark.parametrize(
    ("model", "expect_s3"),
    [("train_mode_factories:with_dropout", True), ("train_mode_factories:plain", False), ("digits_cnn", False)],
)
def test_s3_through_the_cli_when_the_factory_returns_train_mode_that_matters(
    model, expect_s3, tmp_path, monkeypatch, capsys
):
    """A factory that returns train mode gets S3 through `score` as through the API, but only when the mode
    changes the output: a plain network (or a registry model, built fresh by our code) raises no false alarm."""
    (tmp_path / "train_mode_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    code = main(["score", "--model", model, "--random-init", "--battery", "quick", "--n", "8", "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    doc = json.loads((out / "results.json").read_text())
    s3 = [w for w in doc["warnings"] if w["check"] == "S3"]
    assert bool(s3) is expect_s3
    assert ("S3" in stdout) is expect_s3
    sys.modules.pop("train_mode_factories", None)
