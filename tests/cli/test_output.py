"""--json prints one JSON object on stdout (for scripts and CI), --quiet prints nothing; files are written either
way, and --version says what is installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustprune.cli import main


def test_score_json_is_one_object_with_the_headline(tmp_path: Path, capsys) -> None:
    out = tmp_path / "score"
    args = ["score", "--model", "mlp", "--random-init", "--battery", "quick", "--n", "8", "--json", "--out", str(out)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    data = json.loads(stdout)  # the whole of stdout is one JSON document
    doc = json.loads((out / "results.json").read_text())
    assert data["robust_acc"] == doc["robust_acc"] and data["verdict"] == doc["verdict"]
    assert data["files"]["results"] == str(out / "results.json")


def test_quiet_prints_nothing_and_still_writes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "score"
    args = ["score", "--model", "mlp", "--random-init", "--battery", "quick", "--n", "8", "--quiet", "--out", str(out)]
    assert main(args) == 0
    assert capsys.readouterr().out == "" and (out / "results.json").is_file()


def test_train_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "train"
    assert (
        main(
            ["train", "--recipe", "dense", "--epochs", "1", "--set", "train.probe_size=16", "--json", "--out", str(out)]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["recipe"] == "dense" and data["epochs"] == 1 and Path(data["files"]["checkpoint"]).is_file()


def test_json_and_quiet_exclude_each_other(tmp_path: Path, capsys) -> None:
    args = ["score", "--model", "mlp", "--random-init", "--json", "--quiet", "--out", str(tmp_path / "x")]
    assert main(args) == 2
    assert "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--version"])
def test_version(flag: str, capsys) -> None:
    assert main([flag]) == 0
    assert capsys.readouterr().out.startswith("robustprune ")


def test_save_adversarial_writes_verified_examples(tmp_path: Path, capsys) -> None:
    import numpy as np
    import torch

    from robustprune.cli import main as cli
    from robustprune.data import load_dataset
    from robustprune.defenses.pipeline import save_trained, train_model
    from robustprune.models import build_model, load_checkpoint

    artifact, manifest = train_model("dense", epochs=2, overrides=["train.probe_size=16"])
    ckpt = save_trained(artifact, manifest, tmp_path / "model").path
    out = tmp_path / "score"
    args = ["score", "--model", "digits_cnn", "--checkpoint", str(ckpt), "--battery", "quick", "--n", "40"]
    assert cli([*args, "--save-adversarial", "--out", str(out)]) == 0
    assert "adversarial examples:" in capsys.readouterr().out
    saved = np.load(out / "adversarial.npz", allow_pickle=False)
    doc = json.loads((out / "results.json").read_text())
    broken_clean_ok = [
        i for i, (b, c) in enumerate(zip(doc["per_sample"]["broken"], doc["per_sample"]["clean_correct"])) if b and c
    ]
    assert saved["index"].tolist() == broken_clean_ok and len(broken_clean_ok) > 0
    test = load_dataset("digits", "test")
    assert np.array_equal(saved["label"], test.y.numpy()[saved["index"]])
    assert float(np.abs(saved["x_adv"] - saved["x_clean"]).max()) <= float(saved["eps"]) + 1e-6
    model, _ = load_checkpoint(build_model("digits_cnn", 10, (1, 8, 8)), ckpt)
    with torch.no_grad():
        pred = model(torch.from_numpy(saved["x_adv"])).argmax(1).numpy()
    assert np.array_equal(pred, saved["adv_pred"]) and not np.any(pred == saved["label"])
