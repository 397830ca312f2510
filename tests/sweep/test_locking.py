"""A sweep directory is locked for the sweep's life, cells are locked while they compute, and a cell's files
never make robustprune import code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustprune.cli import main
from robustprune.paths import SWEEP_LOCK
from robustprune.sweep import SweepSpec, plan_cells, run_sweep
from robustprune.sweep.locking import hold

GRID = {"recipes": ("dense", "magnitude"), "sparsities": (0.0, 0.5), "seeds": (0,), "battery": "quick", "n": 20}
CLI_GRID = ["--recipes", "dense,magnitude", "--sparsities", "0,0.5", "--seeds", "0", "--battery", "quick"]
CLI_GRID += ["--n", "20", "--epochs", "1"]

# Loaded into every sweep process through PYTHONPATH: appends one line per cell computation to $COUNT_FILE.
COUNTER = """
import os, robustprune.sweep.cell as cell_module
_compute = cell_module._compute_cell
def _counted(cell, root):
    with open(os.environ["COUNT_FILE"], "a") as fh:
        fh.write(cell.key + "\\n")
    return _compute(cell, root)
cell_module._compute_cell = _counted
"""


def test_two_sweeps_into_one_directory_compute_every_cell_once(tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(COUNTER)
    count = tmp_path / "computed.txt"
    env = os.environ | {"PYTHONPATH": str(hooks), "COUNT_FILE": str(count)}
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "robustprune", "sweep", *CLI_GRID, "--out", str(out)]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [p.communicate(timeout=600) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], results
    computed = count.read_text().split()
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    assert sorted(computed) == sorted(cells)  # every cell exactly once, across both processes
    assert any("waiting for sweep directory" in err for _, err in results)


def test_no_wait_names_the_holder_and_computes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    with hold(out / SWEEP_LOCK, what="sweep directory"):
        code = main(["sweep", *CLI_GRID, "--no-wait", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"pid {os.getpid()}" in err[0] and "in use" in err[0]
    assert not (out / "cells").exists() and not (out / "sweep.json").exists()


def test_a_lock_left_by_a_killed_sweep_is_taken_over(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    # What a SIGKILLed holder leaves: the file names it, but the kernel released its flock.
    (out / SWEEP_LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": "here", "since": "then"}))
    records = run_sweep(SweepSpec(**GRID, epochs=1), out, wait=False)
    assert len(records) == 3


SIDE_EFFECT = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def factory(num_classes, input_shape, mean=None, std=None):
    raise SystemExit("never called")
"""


def _partial(out: Path, recipe: str) -> Path:
    """Make the finished cell of `recipe` look as if the sweep stopped while scoring it."""
    cells = {c.recipe: c.key for c in plan_cells(SweepSpec(**GRID, epochs=1))}
    cell_dir = out / "cells" / cells[recipe]
    (cell_dir / "cell.json").unlink()
    return cell_dir


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "sweep"
    run_sweep(SweepSpec(**GRID, epochs=1), out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("tamper", ["foreign_architecture", "truncated", "hash_mismatch"])
def test_a_partial_cell_manifest_never_imports_code_and_never_blocks_the_sweep(tamper, finished, tmp_path, monkeypatch):
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_arch.py").write_text(SIDE_EFFECT.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = _copy(finished, tmp_path / "sweep")
    cell_dir = _partial(out, "magnitude")
    manifest_file = cell_dir / "model.manifest.json"
    manifest = json.loads(manifest_file.read_text())
    if tamper == "foreign_architecture":  # the manifest of the cell's own checkpoint, but naming a module
        from robustprune.models import load_checkpoint
        from robustprune.models.checkpoint import save_checkpoint
        from robustprune.models.registry import build_model

        model, _ = load_checkpoint(build_model("digits_cnn", 10, (1, 8, 8)), cell_dir / "model.safetensors")
        save_checkpoint(model, cell_dir / "model.safetensors", manifest | {"architecture": "evil_arch:factory"})
    elif tamper == "truncated":
        manifest_file.write_text(manifest_file.read_text()[:40])
    else:
        manifest_file.write_text(json.dumps(manifest | {"architecture": "evil_arch:factory"}))
    records = run_sweep(SweepSpec(**GRID, epochs=1), out)
    assert not marker.exists()  # the module named by the file was never imported
    assert "evil_arch" not in sys.modules
    assert len(records) == 3 and (cell_dir / "cell.json").is_file()
    result = json.loads((cell_dir / "score" / "results.json").read_text())
    assert result["architecture"] == "digits_cnn"


def test_a_sweep_still_writing_its_plan_is_not_taken_for_foreign_files(tmp_path):
    """The race a second sweep can see: the first holds the lock and is mid-way through the atomic write of its
    plan (only a hidden temporary exists). That folder is a sweep's, not a folder of other files."""
    from robustprune.errors import UsageError
    from robustprune.sweep.run import _check_sweep_folder

    (tmp_path / SWEEP_LOCK).write_text("")
    (tmp_path / ".sweep.json.gur2ncgb.tmp").write_text("{")
    _check_sweep_folder(tmp_path, ["a", "b"], overwrite=False)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a sweep's"):
        _check_sweep_folder(tmp_path, ["a", "b"], overwrite=False)
