"""`robustprune train`: bad input exits 2 with one line and writes nothing; a good run writes checkpoint + manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustprune.cli import main
from robustprune.config import BUILTIN_DIR
from robustprune.models import build_model, load_checkpoint, save_checkpoint

FAST = ["--set", "train.probe_steps=1", "--set", "train.probe_size=16"]


@pytest.fixture(scope="module")
def mlp_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of another architecture: does not fit digits_cnn."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mlp") / "mlp.safetensors"
    save_checkpoint(build_model("mlp", 10, (1, 8, 8)), path)
    return path


@pytest.fixture(scope="module")
def dense_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dense")
    assert main(["train", "--recipe", "dense", "--epochs", "1", *FAST, "--out", str(out)]) == 0
    return out / "model.safetensors"


@pytest.fixture(scope="module")
def sparse_ckpt(tmp_path_factory: pytest.TempPathFactory, dense_ckpt: Path) -> Path:
    out = tmp_path_factory.mktemp("sparse")
    assert (
        main(
            [
                "train",
                "--recipe",
                "magnitude",
                "--parent",
                str(dense_ckpt),
                "--sparsity",
                "0.5",
                "--epochs",
                "0",
                *FAST,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out / "model.safetensors"


BAD = {
    "unknown recipe key": ["--recipe", "pgd_at", "--set", "train.bogus=1"],
    "unknown settings key": ["--recipe", "pgd_at", "--set", "settings.bogus=1"],
    "unknown top-level key": ["--recipe", "dense", "--set", "bogus=1"],
    "bad setting value": ["--recipe", "pgd_at", "--set", "settings.eps=2.0"],
    "sparsity 1.0": ["--recipe", "pgd_at", "--sparsity", "1.0"],
    "sparsity -0.1": ["--recipe", "pgd_at", "--sparsity", "-0.1"],
    "sparsity nan": ["--recipe", "pgd_at", "--sparsity", "nan"],
    "missing parent magnitude": ["--recipe", "magnitude", "--sparsity", "0.5"],
    "missing parent scratch": ["--recipe", "scratch", "--sparsity", "0.5"],
    "unknown recipe": ["--recipe", "no_such_recipe"],
    "unknown defense": ["--recipe", "dense", "--set", "defense=nope"],
    "missing recipe file": ["--recipe", "nowhere/x.toml"],
    "iterative epochs < rounds": [
        "--recipe",
        "magnitude_iterative",
        "--epochs",
        "2",
        "--sparsity",
        "0.5",
        "--parent",
        "{dense}",
    ],
    "negative epochs": ["--recipe", "dense", "--epochs", "-1"],
    "unknown dataset": ["--recipe", "dense", "--dataset", "nowhere.npz"],
    "missing parent file": ["--recipe", "magnitude", "--parent", "nowhere.safetensors", "--sparsity", "0.5"],
    "parent does not fit": ["--recipe", "magnitude", "--parent", "{mlp}", "--sparsity", "0.5"],
    "parent sparser than target": ["--recipe", "pgd_at", "--parent", "{sparse}"],
    "exclude unknown layer": [
        "--recipe",
        "magnitude",
        "--parent",
        "{dense}",
        "--sparsity",
        "0.5",
        "--set",
        "pruning.exclude=['nope']",
    ],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_one_line_nothing_written(
    case: str, tmp_path: Path, mlp_ckpt: Path, dense_ckpt: Path, sparse_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = [a.format(mlp=mlp_ckpt, dense=dense_ckpt, sparse=sparse_ckpt) for a in BAD[case]]
    epochs = [] if "--epochs" in args else ["--epochs", "1"]  # a mistake must never cost a training run
    assert main(["train", *args, *epochs, *FAST, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robustprune: error: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_bad_input_messages_say_what_is_wrong(
    tmp_path: Path, mlp_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expectations = {
        "train.bogus=1": "bogus",
        "settings.bogus=1": "bogus",
    }
    for override, word in expectations.items():
        assert main(["train", "--recipe", "pgd_at", "--set", override, "--out", str(tmp_path / "o")]) == 2
        assert word in capsys.readouterr().err
    assert main(["train", "--recipe", "scratch", "--out", str(tmp_path / "o")]) == 2
    assert "needs a parent" in capsys.readouterr().err
    assert main(["train", "--recipe", "magnitude", "--parent", str(mlp_ckpt), "--out", str(tmp_path / "o")]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert main(["train", "--recipe", "pgd_at", "--sparsity", "1.0", "--out", str(tmp_path / "o")]) == 2
    assert "impossible" in capsys.readouterr().err


def test_good_run_writes_checkpoint_and_manifest(
    tmp_path: Path, dense_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--recipe",
            str(BUILTIN_DIR / "defenses" / "magnitude.toml"),  # a recipe named by its path
            "--parent",
            str(dense_ckpt),
            "--sparsity",
            "0.7",
            "--epochs",
            "1",
            "--seed",
            "1",
            *FAST,
            "--set",
            "train.lr=0.02",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert str(out / "model.safetensors") in stdout and "sparsity 0.7000 achieved" in stdout
    manifest = json.loads((out / "model.manifest.json").read_text())
    assert manifest["recipe"]["name"] == "magnitude" and manifest["seed"] == 1
    assert manifest["recipe"]["train"]["lr"] == 0.02 and manifest["recipe"]["train"]["epochs"] == 1
    assert abs(manifest["sparsity"]["achieved"] - 0.7) <= 0.005
    assert manifest["provenance"]["command"][0] == "robustprune"
    _, info = load_checkpoint(build_model("digits_cnn", 10, (1, 8, 8)), out / "model.safetensors")
    assert not info.trusted and info.manifest == manifest and info.masked
    # no temp leftovers: the checkpoint, its manifest, and the marker saying which run wrote the folder
    assert sorted(p.name for p in out.iterdir()) == [
        ".robustprune-run.json",
        "model.manifest.json",
        "model.safetensors",
    ]
    assert not list(out.parent.glob(f".{out.name}.partial-*"))


def test_module_entry_point_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "robustprune", "train", "--recipe", "pgd_at", "--sparsity", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "sparsity" in proc.stderr
    assert not out.exists()
