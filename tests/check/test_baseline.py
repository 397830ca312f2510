"""The committed regression baseline (reports/baseline/) against the current code, and `check` failing on a
weakened defense."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from robustprune.cli import main
from robustprune.sweep import SweepSpec, read_sweep_toml, run_sweep

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "reports" / "baseline"


@pytest.fixture(scope="module")
def rerun(tmp_path_factory) -> Path:
    """The baseline's own sweep configuration, run again by the current code."""
    root = tmp_path_factory.mktemp("rerun")
    run_sweep(SweepSpec(**read_sweep_toml(REPO / "sweeps" / "baseline.toml")), root)
    return root


def cell_dir(root: Path, recipe: str, sparsity: float) -> Path:
    for path in root.glob("cells/*/cell.json"):
        record = json.loads(path.read_text())
        if record["recipe"] == recipe and record["sparsity"] == sparsity:
            return path.parent
    raise AssertionError(f"no {recipe} cell at sparsity {sparsity} under {root}")


def test_current_code_passes_the_committed_baseline(rerun, capsys):
    assert (BASELINE / "results.json").is_file(), "reports/baseline/ is missing: regenerate it (see README)"
    code = main(["check", str(rerun), "--baseline", str(BASELINE)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("PASS")
    assert "pgd_at s=0.5 seed=0" in out  # every cell was compared, not skipped


def test_check_fails_on_a_model_without_adversarial_training(rerun, tmp_path, capsys):
    weakened = tmp_path / "weakened"
    shutil.copytree(rerun, weakened)
    # Same architecture, same examples, no adversarial training: the dense model's result stands in for PGD-AT's.
    dense = cell_dir(weakened, "dense", 0.0) / "score" / "results.json"
    pgd_at = cell_dir(weakened, "pgd_at", 0.0) / "score" / "results.json"
    pgd_at.write_text(dense.read_text())
    code = main(["check", str(weakened), "--baseline", str(BASELINE)])
    out = capsys.readouterr().out
    assert code == 1
    failing = [line for line in out.splitlines() if line.startswith("pgd_at s=0 seed=0") and "FAIL" in line]
    assert any("robust acc (worst case)" in line for line in failing), out
    assert out.strip().splitlines()[-1].startswith("FAIL")
