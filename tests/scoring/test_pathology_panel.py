"""The generated pathology panel: every pathology of tests/pathologies.py applied to two of three architectures
(a digits MLP, a digits CNN, the CNN magnitude-pruned to 80 %). Each model must end in a result with a verdict or
in the one-line error its pathology calls for (UsageError: exit 2; UserCodeError: exit 1), never anything else; a
pathology that can inflate the number is never `trusted`; where a generic escalation can reach the truth, the
worst case is at most the test's own adaptive reference attack's + 1 example (torchattacks PGD crafted on the
reference model, judged on the pathological one). bench/pathology_panel.py prints the same panel as a table."""

from __future__ import annotations

import copy

import pytest
import torch
from broken_models import pruned, reference_robust
from pathologies import PATHOLOGIES, Pathology

from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.defenses.pipeline import train_model
from robustprune.errors import UsageError, UserCodeError
from robustprune.models import build_model
from robustprune.scoring import RANDOMIZED_PASSES, EscalationBudget, score
from robustprune.scoring.health import VERDICTS

N = 24
EPS = 0.1
BATTERY = BatterySpec(
    name="panel",
    threat=ThreatModel(norm="Linf", eps=EPS),
    attacks=(
        AttackSpec(name="pgd", params={"steps": 20, "rel_step": 0.1}),
        AttackSpec(name="apgd_t", params={"steps": 20, "n_target_classes": 3}),
        # a short gradient-free attack of its own, so a cut graph does not get AutoAttack's 5000-query Square added
        AttackSpec(name="square", params={"n_queries": 300, "p_init": 0.8}),
    ),
)
BUDGET = EscalationBudget(square_queries=300, steps=30, restarts=1)
ARCHITECTURES = ("mlp", "cnn", "pruned cnn")


# the masking pathologies that hide in the forward pass, each also on a second architecture
TWICE = ("functional round", "Function, zero backward", "comparison cast to float", "detach + zero term",
         "decoy gradient term", "input-dependent early exit")  # fmt: skip


def _cases() -> list[tuple[Pathology, str]]:
    """Each pathology on one architecture in turn (randomized ones on the MLP: they cost the most), those in TWICE
    on the next one too."""
    cases = []
    for i, pathology in enumerate(PATHOLOGIES):
        cases.append((pathology, "mlp" if pathology.randomized else ARCHITECTURES[i % 3]))
        if pathology.name in TWICE:
            cases.append((pathology, ARCHITECTURES[(i + 1) % 3]))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def data(digits_test):
    return digits_test.subset(N)


@pytest.fixture(scope="module")
def builders(_trained_mlp_state):
    """Fresh copies of each architecture (a pathology may change the model it wraps)."""
    artifact, _ = train_model("dense", epochs=4, seed=0)
    cnn = artifact.model.eval()
    mlp = build_model("mlp", 10, (1, 8, 8))
    mlp.load_state_dict(_trained_mlp_state)
    mlp.eval()
    return {
        "mlp": lambda: copy.deepcopy(mlp),
        "cnn": lambda: copy.deepcopy(cnn),
        "pruned cnn": lambda: pruned(cnn, 0.8),
    }


def test_the_panel_is_large_and_covers_every_category():
    assert len(CASES) >= 25 and set(TWICE) <= {p.name for p in PATHOLOGIES}
    assert {arch for _, arch in CASES} == set(ARCHITECTURES)
    assert {p.ends for p in PATHOLOGIES} == {"verdict", "usage", "run"}


@pytest.mark.parametrize(("pathology", "arch"), CASES, ids=[f"{p.name}-{a}" for p, a in CASES])
def test_every_pathology_ends_cleanly_and_honestly(pathology, arch, builders, data):
    build = builders[arch]
    model = pathology.wrap(build(), tuple(data.input_shape), data.num_classes)
    try:
        result = score(model, data, BATTERY, seed=0, escalation_budget=BUDGET, efficiency=False)
    except UsageError as exc:
        assert pathology.ends == "usage", f"{pathology.name}: unexpected exit-2 error: {exc}"
        assert "\n" not in str(exc) and str(exc).startswith("the model")
        return
    except UserCodeError as exc:
        assert pathology.ends == "run", f"{pathology.name}: unexpected exit-1 error: {exc}"
        assert "\n" not in str(exc) and "the model raised RuntimeError('boom')" in str(exc) and "battery" in str(exc)
        return
    assert pathology.ends == "verdict", f"{pathology.name} was scored ({result.verdict}) instead of refused"
    assert result.verdict in VERDICTS
    if pathology.inflates:
        assert result.verdict != "trusted", f"{pathology.name} on {arch} came out trusted"
    robust = round(result.robust_acc * N / 100)
    if pathology.reference is not None:
        judged = pathology.wrap(build(), tuple(data.input_shape), data.num_classes).eval()
        crafted = pathology.reference(build()).eval()
        eot = {"eot_iter": 20, "n_passes": RANDOMIZED_PASSES} if pathology.randomized else {}
        torch.manual_seed(0)
        reference = reference_robust(crafted, judged, data.x, data.y, EPS, steps=50, restarts=2, **eot)
        assert robust <= reference + 1, (
            f"{pathology.name} on {arch}: {robust} survive, the reference leaves {reference}"
        )
    if pathology.same_numbers:
        plain = score(build(), data, BATTERY, seed=0, escalation_budget=BUDGET, efficiency=False)
        assert (result.clean_acc, result.robust_acc) == (plain.clean_acc, plain.robust_acc)
        assert (result.per_sample.broken == plain.per_sample.broken).all()
        assert result.data.fingerprint == data.fingerprint() == plain.data.fingerprint
