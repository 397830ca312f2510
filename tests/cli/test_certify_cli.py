"""`score --certify` from the command line: the bracket on the summary's first line, the exact value for a 90 %
pruned MLP, --strict failing a battery the exact search shows to be too weak, and bad settings refused.
(The exact search against the full default battery is tests/scoring/test_bracket.py's and the README's bench.)"""

from __future__ import annotations

import json

import pytest
from torch import nn
from torch.nn.utils import prune

from robustprune.cli import main
from robustprune.models import build_model, save_checkpoint


@pytest.fixture(scope="module")
def pruned_checkpoint(tmp_path_factory, _trained_mlp_state):
    model = build_model("mlp", 10, (1, 8, 8))
    model.load_state_dict(_trained_mlp_state)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.9)
    for module, name in layers:
        prune.remove(module, name)
    path = tmp_path_factory.mktemp("pruned") / "mlp90.safetensors"
    save_checkpoint(model, path)
    return path


def score(tmp_path, checkpoint, *extra: str) -> list[str]:
    return [
        "score", "--model", "mlp", "--checkpoint", str(checkpoint), "--n", "30", "--eps", "0.1",
        "--out", str(tmp_path / "out"), *extra,
    ]  # fmt: skip


def test_certify_exact_leads_with_the_bracket_and_strict_fails_a_battery_it_shows_too_weak(
    tmp_path, pruned_checkpoint, capsys
):
    weak = tmp_path / "weak.toml"
    weak.write_text('name = "weak"\nnorm = "Linf"\neps = 0.1\n\n[[attack]]\nname = "fgsm"\n')
    argv = score(
        tmp_path, pruned_checkpoint, "--battery", str(weak), "--certify", "exact", "--exact-time-limit", "3", "--strict"
    )
    code = main(argv)
    captured = capsys.readouterr()
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    bounds = doc["bounds"]
    assert bounds["method"] == "exact" and bounds["solver"] and len(doc["per_sample"]["status"]) == 30
    first = captured.out.splitlines()[0]  # a caution verdict: the bracket leads
    assert first.startswith(f"robust {doc['robust_acc']:.1f} % (upper); certified >= {bounds['certified_acc']:.1f} %")
    if bounds["exact_acc"] is not None:  # every example decided within the time limit
        assert first.endswith(f"exact {bounds['exact_acc']:.1f} %") and bounds["counts"]["unknown"] == 0
    assert bounds["exact_breaks"], "one FGSM step leaves examples the MILP breaks"
    assert code == 1 and "exact search broke" in captured.err
    assert doc["verdict"] == "caution"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--certify", "milp"], "invalid choice"),
        (["--exact-time-limit", "0"], "--exact-time-limit"),
        (["--exact-budget", "-5"], "--exact-budget"),
        (["--max-gap", "101"], "--max-gap"),
    ],
)
def test_bad_certify_settings_are_one_line_errors_before_anything_runs(
    tmp_path, pruned_checkpoint, capsys, flags, message
):
    code = main(score(tmp_path, pruned_checkpoint, *flags))
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "Traceback" not in err and "\n" not in err
    assert not (tmp_path / "out").exists()
