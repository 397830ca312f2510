"""`robustprune score` end to end: outputs, exit codes, one-line errors and nothing written on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robustprune.cli import main
from robustprune.models import build_model, save_checkpoint
from robustprune.results.schema import validate_document
from robustprune.sparsity import apply_masks, global_magnitude


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def score_args(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return [
        "score",
        "--model",
        "mlp",
        "--checkpoint",
        str(ckpt),
        "--battery",
        "quick",
        "--eps",
        "0.1",
        "--n",
        "40",
        "--batch-size",
        "20",
        "--out",
        str(out),
        *extra,
    ]


def test_score_writes_results_and_reports(mlp_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(score_args(mlp_checkpoint, out), capsys)
    assert code == 0, stderr
    assert "worst case" in stdout and "clean" in stdout
    assert {p.name for p in out.iterdir()} >= {"results.json", "report.md", "report.html", "probabilities.npz"}
    doc = json.loads((out / "results.json").read_text())
    validate_document(doc)
    assert doc["provenance"]["checkpoint"]["sha256"] and doc["provenance"]["checkpoint"]["trusted"] is False
    assert (
        doc["provenance"]["command"][:2] == ["robustprune", "score"] or doc["provenance"]["command"][0] == "robustprune"
    )
    assert doc["architecture"] == "mlp" and doc["dataset"] == "digits"
    probs = np.load(out / "probabilities.npz")
    assert probs["clean"].shape == (40, 10)
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_the_default_battery_is_fast_and_its_audit_is_shown(mlp_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    args = score_args(mlp_checkpoint, out)
    i = args.index("--battery")
    del args[i : i + 2]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    doc = json.loads((out / "results.json").read_text())
    validate_document(doc)
    assert doc["battery"] == "fast" and doc["audit"]["attack"] == "autoattack"
    assert doc["audit"]["n_audited"] >= min(2, doc["audit"]["n_survivors"])
    # in the verdict block at the top of the summary
    assert any(line.strip().startswith("audit (autoattack):") for line in stdout.splitlines()[:6]), stdout
    assert "audit (autoattack):" in (out / "report.md").read_text()


def assert_bad_input(args: list[str], capsys, out: Path, match: str) -> None:
    code, _, stderr = run_cli(args, capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustprune: error:"), stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not out.exists()


def truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bad_checkpoints(mlp_checkpoint, tmp_path, capsys):
    out = tmp_path / "never"
    cases = {
        "missing": (tmp_path / "nope.safetensors", "does not exist"),
        "truncated": (truncated(mlp_checkpoint, tmp_path / "half.safetensors"), "truncated"),
        "corrupt": (tmp_path / "junk.pt", "corrupt"),
    }
    (tmp_path / "junk.pt").write_bytes(os.urandom(256))
    for path, match in cases.values():
        assert_bad_input(score_args(path, out), capsys, out, match)
    cnn = tmp_path / "cnn.safetensors"
    save_checkpoint(build_model("digits_cnn", 10, (1, 8, 8)), cnn)
    assert_bad_input(score_args(cnn, out), capsys, out, "does not fit")


def test_pickled_payload_is_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"fc1.weight": Payload(marker)}, evil)
    out = tmp_path / "never"
    assert_bad_input(score_args(evil, out), capsys, out, "--trust-checkpoint")
    assert not marker.exists()


def test_torchscript_needs_trust_and_trust_is_recorded(tmp_path, capsys, _trained_mlp_state):
    model = build_model("mlp", 10, (1, 8, 8))
    model.load_state_dict(_trained_mlp_state)
    scripted = tmp_path / "mlp.ts"
    torch.jit.script(model).save(str(scripted))
    out = tmp_path / "run"
    assert_bad_input(score_args(scripted, out), capsys, out, "--trust-checkpoint")
    code, _, stderr = run_cli(score_args(scripted, out, "--trust-checkpoint"), capsys)
    assert code == 0, stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["provenance"]["checkpoint"]["trusted"] is True
    assert doc["provenance"]["checkpoint"]["format"] == "torchscript"
    validate_document(doc)  # a scripted module hides its layers: sparsity is null with a warning
    assert doc["sparsity"] is None and any(w["check"] == "sparsity" for w in doc["warnings"])


def npz(tmp_path: Path, name: str, x: np.ndarray, y: np.ndarray) -> str:
    path = tmp_path / f"{name}.npz"
    np.savez(path, x=x, y=y, num_classes=10)
    return str(path)


def test_bad_data(mlp_checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((50, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    nan_x = x.copy()
    nan_x[3, 0, 1, 1] = np.nan
    cases = {
        "nan": (nan_x, y, "NaN"),
        "range": (x * 4 - 1, y, "outside [0,1]"),
        "rank": (x.reshape(50, 64), y, "rank"),
        "labels": (x, np.where(y == 0, 12, y), "label"),
    }
    out = tmp_path / "never"
    for name, (xs, ys, match) in cases.items():
        args = score_args(mlp_checkpoint, out, "--dataset", npz(tmp_path, name, xs, ys))
        code, _, stderr = run_cli(args, capsys)
        assert code == 2 and match.lower() in stderr.lower(), (name, stderr)
        assert len(stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--eps", "-0.1"], "negative"),
        (["--eps", "nan"], "finite"),
        (["--eps", "5"], "absurd"),
        (["--n", "100000"], "beyond the dataset"),
        (["--battery", "nonesuch"], "unknown battery"),
        (["--model", "resnet9000"], "unknown model"),
        (["--model", "no_such_pkg.mod:factory"], "cannot import"),
        (["--dataset", "cifar-11"], "not found"),
        (["--batch-size", "0"], "batch-size"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_arguments(mlp_checkpoint, tmp_path, capsys, extra, match):
    out = tmp_path / "never"
    assert_bad_input(score_args(mlp_checkpoint, out, *extra), capsys, out, match)


def test_bad_battery_files(mlp_checkpoint, tmp_path, capsys):
    out = tmp_path / "never"
    unknown_key = tmp_path / "k.toml"
    unknown_key.write_text('eps = 0.1\nrestarts = 2\n[[attack]]\nname = "pgd"\n')
    unknown_attack = tmp_path / "a.toml"
    unknown_attack.write_text('eps = 0.1\n[[attack]]\nname = "deepfool9"\n')
    unknown_setting = tmp_path / "s.toml"
    unknown_setting.write_text('eps = 0.1\n[[attack]]\nname = "pgd"\nstepz = 3\n')
    for path, match in [
        (unknown_key, "unknown key 'restarts'"),
        (unknown_attack, "unknown attack 'deepfool9'"),
        (unknown_setting, "unknown setting 'stepz'"),
    ]:
        args = score_args(mlp_checkpoint, out, "--battery", str(path))
        args.remove("--eps"), args.remove("0.1")
        assert_bad_input(args, capsys, out, match)


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "robustprune", "ls"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "digits_cnn" in proc.stdout and "standard" in proc.stdout and "autoattack" in proc.stdout
    lines = {line.split(":")[0]: line for line in proc.stdout.splitlines()}
    assert {"models", "attacks", "min-norm", "datasets", "batteries", "recipes"} <= set(lines)
    assert "fmn, fab" in lines["min-norm"] and "digits" in lines["datasets"] and "npz" in lines["datasets"]
    bad = subprocess.run(
        [sys.executable, "-m", "robustprune", "score"], capture_output=True, text=True, timeout=120, check=False
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_parent_checkpoint_is_attacked_by_transfer_and_a_missing_one_is_refused(
    mlp_checkpoint, tmp_path, capsys, _trained_mlp_state
):
    model = build_model("mlp", 10, (1, 8, 8))
    model.load_state_dict(_trained_mlp_state)
    apply_masks(model, global_magnitude(model, 0.8))
    pruned = tmp_path / "pruned.safetensors"
    save_checkpoint(model, pruned)
    out = tmp_path / "run"
    code, _, stderr = run_cli(score_args(pruned, out, "--parent", str(mlp_checkpoint)), capsys)
    assert code == 0, stderr
    doc = json.loads((out / "results.json").read_text())
    checks = {c["id"]: c for c in doc["health"]["checks"]}
    assert checks["S9"]["status"] in ("pass", "warn") and checks["S21"]["status"] in ("pass", "warn")
    transfer = next(a for a in doc["attacks"] if a["label"] == "S9:transfer_pgd")
    assert transfer["role"] == "probe" and transfer["n_attempted"] > 0

    missing = tmp_path / "missing"
    code, _, stderr = run_cli(score_args(pruned, missing, "--parent", str(tmp_path / "nowhere.safetensors")), capsys)
    assert code == 2 and stderr.count("\n") == 1 and "--parent" in stderr and not missing.exists()


def test_strict_exits_1_on_an_untrusted_verdict_and_still_writes_the_results(tmp_path, capsys, monkeypatch):
    (tmp_path / "cut_mlp.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "from robustprune.models import build_model\n\n"
        "class Detached(nn.Module):\n"
        "    def __init__(self, inner):\n"
        "        super().__init__()\n"
        "        self.inner = inner\n\n"
        "    def forward(self, x):  # through numpy, flattened: no straight-through version bridges it\n"
        "        return self.inner(torch.tensor(x.detach().numpy().reshape(len(x), -1)).view_as(x))\n\n"
        "def factory(num_classes, input_shape, mean=None, std=None):\n"
        "    return Detached(build_model('mlp', num_classes, input_shape))\n"
    )
    battery = tmp_path / "square.toml"
    battery.write_text('name = "sq"\nnorm = "Linf"\neps = 0.1\n\n[[attack]]\nname = "square"\nn_queries = 100\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    args = ["score", "--model", "cut_mlp:factory", "--battery", str(battery), "--n", "8", "--out", str(out)]
    code, stdout, stderr = run_cli([*args, "--strict"], capsys)
    assert code == 1 and "--strict" in stderr and "untrusted" in stderr
    assert stdout.startswith("VERDICT: UNTRUSTED")
    assert json.loads((out / "results.json").read_text())["verdict"] == "untrusted"
    sys.modules.pop("cut_mlp", None)
