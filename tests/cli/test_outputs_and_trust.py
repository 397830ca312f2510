"""Outputs written as a unit, and trust only where it was given.

An interrupt or a full disk while a run saves leaves the previous complete set of files, or nothing; an --out that
holds another run's files or a file the run reads is refused; a manifest whose hash the checkpoint does not carry
is ignored, and no file another file names is ever loaded with trust."""

from __future__ import annotations

import errno
import json
import pickle

import numpy as np
import pytest
import torch

from robustprune.cli import main
from robustprune.errors import UsageError
from robustprune.models import build_model, save_checkpoint

SCORE = ["score", "--model", "mlp", "--random-init", "--battery", "quick", "--n", "8", "--batch-size", "8"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


@pytest.fixture
def previous(tmp_path, capsys):
    """A complete score folder from an earlier run (eps 0.1), and its files."""
    out = tmp_path / "run"
    assert run([*SCORE, "--eps", "0.1", "--out", str(out)], capsys)[0] == 0
    return out, snapshot(out)


@pytest.mark.parametrize("when", ["after report.md", "before results.json"])
def test_an_interrupt_while_saving_leaves_the_previous_complete_set(when, previous, monkeypatch, capsys):
    """Ctrl-C in the middle of writing: the folder still holds the earlier run's files, all of them, unchanged."""
    out, before = previous
    import robustprune.results.io as io_module

    real = io_module.write_text

    def interrupted(path, text):
        written = real(path, text)
        if (when == "after report.md" and path.name == "report.md") or (
            when == "before results.json" and path.name == "results.json"
        ):
            raise KeyboardInterrupt
        return written

    monkeypatch.setattr(io_module, "write_text", interrupted)
    code, _, err = run([*SCORE, "--eps", "0.05", "--out", str(out), "--overwrite"], capsys)
    assert code == 130 and err.strip() == "robustprune: interrupted"
    assert snapshot(out) == before  # eps 0.1's report beside eps 0.1's results, as before
    assert not list(out.parent.glob(".run.partial-*"))


def test_a_full_disk_while_saving_is_one_line_and_leaves_the_previous_set(previous, monkeypatch, capsys):
    out, before = previous
    import robustprune.results.io as io_module

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io_module, "write_bytes", full)
    code, _, err = run([*SCORE, "--eps", "0.05", "--out", str(out), "--overwrite"], capsys)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err
    assert "No space left on device" in err and "nothing was written to" in err
    assert snapshot(out) == before


def test_an_interrupted_first_run_leaves_nothing(tmp_path, monkeypatch, capsys):
    import robustprune.results.io as io_module

    def interrupted(path, text):
        raise KeyboardInterrupt

    monkeypatch.setattr(io_module, "write_text", interrupted)
    out = tmp_path / "fresh"
    assert run([*SCORE, "--out", str(out)], capsys)[0] == 130
    assert not out.exists() and not list(tmp_path.glob(".fresh.*"))


def test_another_runs_folder_needs_overwrite_and_is_then_replaced_whole(previous, capsys):
    out, before = previous
    code, _, err = run([*SCORE, "--eps", "0.05", "--out", str(out)], capsys)
    assert code == 2 and "already holds another score run's files" in err and "--overwrite" in err
    assert snapshot(out) == before
    assert run([*SCORE, "--eps", "0.05", "--out", str(out), "--overwrite"], capsys)[0] == 0
    assert json.loads((out / "results.json").read_text())["eps"] == 0.05
    assert set(snapshot(out)) == set(before)  # the same set of files, all of the new run


def test_a_rerun_of_the_same_configuration_replaces_its_own_folder(previous, capsys):
    out, before = previous
    assert run([*SCORE, "--eps", "0.1", "--out", str(out)], capsys)[0] == 0
    assert set(snapshot(out)) == set(before)


def test_a_folder_of_other_files_is_never_replaced_without_overwrite(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, _, err = run([*SCORE, "--out", str(out)], capsys)
    assert code == 2 and "thesis.tex" in err
    assert (out / "thesis.tex").read_text() == "years of work"


class Marker:
    """Unpickling this creates a file: proof that a pickle's code ran."""

    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_unproven_manifest_is_ignored_and_its_parent_never_loaded(tmp_path, capsys):
    """A sidecar manifest the checkpoint carries no hash of: its parent (a pickle that would run code) is not
    loaded even under --trust-checkpoint, which applies to the checkpoint alone; one note says so."""
    model = build_model("mlp", 10, (1, 8, 8))
    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(model, ckpt)  # no manifest: no hash in the metadata
    marker = tmp_path / "code-ran"
    Marker.path = str(marker)
    parent = tmp_path / "parent.pt"
    with open(parent, "wb") as fh:
        pickle.dump({"state": Marker()}, fh)
    lie = {"parent": {"path": str(parent), "sha256": "0" * 64}, "final": {"val_acc": 0.01}}
    (tmp_path / "model.manifest.json").write_text(json.dumps(lie))
    out = tmp_path / "run"
    args = ["score", "--model", "mlp", "--checkpoint", str(ckpt), "--battery", "quick", "--n", "8"]
    code, _, err = run([*args, "--trust-checkpoint", "--out", str(out)], capsys)
    assert code == 0 and not marker.exists()
    assert "manifest" in err and "ignored" in err and "--trust-checkpoint" not in err
    doc = json.loads((out / "results.json").read_text())
    assert doc["provenance"]["checkpoint"]["manifest"] is None
    assert any("ignored" in note for note in doc["provenance"]["checkpoint"]["notes"])
    assert {c["id"]: c for c in doc["health"]["checks"]}["S19"]["status"] == "skip"  # its accuracy is not used


def test_trust_is_for_the_named_file_only(tmp_path, capsys):
    """--trust-checkpoint does not reach --parent: a pickled parent needs --trust-parent, and the refusal names it."""
    model = build_model("mlp", 10, (1, 8, 8))
    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(model, ckpt)
    parent = tmp_path / "parent.pt"
    torch.save(model, parent)  # a whole pickled module
    args = ["score", "--model", "mlp", "--checkpoint", str(ckpt), "--parent", str(parent), "--battery", "quick"]
    code, _, err = run([*args, "--n", "8", "--trust-checkpoint", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "--trust-parent" in err and "pass --trust-checkpoint" not in err


def test_a_recipe_import_path_is_refused_in_a_file_and_taken_from_the_command_line(tmp_path, user_module, capsys):
    name = user_module(
        "from robustprune.models import build_model\n\ndef net(num_classes, input_shape):\n"
        "    return build_model('digits_cnn', num_classes, input_shape)\n",
        "recipe_models",
    )
    recipe = tmp_path / "mine.toml"
    recipe.write_text(f'defense = "standard"\narchitecture = "{name}:net"\n\n[train]\nepochs = 1\n')
    code, _, err = run(["train", "--recipe", str(recipe), "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "a recipe file never imports code" in err and f"--set architecture={name}:net" in err
    recipe.write_text('defense = "standard"\n\n[train]\nepochs = 1\n')
    args = ["train", "--recipe", str(recipe), "--set", f"architecture={name}:net", "--out", str(tmp_path / "b")]
    assert run([*args, "--quiet"], capsys)[0] == 0


def test_the_python_api_refuses_bad_arguments_with_usage_errors(tmp_path, trained_mlp):
    from robustprune import save_result, score

    with pytest.raises(UsageError, match="needs a model"):
        score(None, "digits", "quick")
    with pytest.raises(UsageError, match="needs data"):
        score(trained_mlp, None, "quick")
    with pytest.raises(UsageError, match="checkpoint must be the CheckpointInfo"):
        score(trained_mlp, "digits", "quick", checkpoint="model.safetensors")
    with pytest.raises(UsageError, match="needs the ScoreResult"):
        save_result(None, tmp_path / "x")
    result = score(trained_mlp, "digits", "quick", n=8, efficiency=False)
    with pytest.raises(UsageError, match="cannot be"):
        save_result(result, "/proc/robustprune_nowhere/x")


def test_score_leaves_the_callers_random_generators_as_they_were(trained_mlp):
    from robustprune import score

    torch.manual_seed(123)
    np.random.seed(7)
    expected_torch, expected_numpy = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(7)
    score(trained_mlp, "digits", "quick", n=8, efficiency=False, seed=5)
    assert torch.equal(torch.rand(3), expected_torch) and np.array_equal(np.random.rand(3), expected_numpy)


@pytest.mark.parametrize(
    ("value", "traceback"), [("1", True), ("true", True), ("0", False), ("false", False), ("", False)]
)
def test_robustprune_debug_is_read_as_a_boolean(value, traceback, monkeypatch, capsys):
    from robustprune.cli.common import run as run_job

    monkeypatch.setenv("ROBUSTPRUNE_DEBUG", value)

    def crash() -> int:
        raise RuntimeError("boom")

    assert run_job(crash) == 1
    assert ("Traceback" in capsys.readouterr().err) is traceback


def test_a_sweep_refused_for_its_device_writes_nothing(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device exists here: --device cuda is valid")
    out = tmp_path / "sweep"
    args = ["sweep", "--recipes", "dense", "--sparsities", "0", "--seeds", "0", "--n", "8", "--epochs", "1"]
    code, _, err = run([*args, "--device", "cuda", "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and not out.exists()
