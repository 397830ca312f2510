"""Sweeps: cells keyed by configuration, resume after SIGKILL, damaged results recomputed, executors agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustprune.errors import UsageError
from robustprune.reporting.sweep_report import build_sweep_report
from robustprune.sweep import SweepSpec, plan_cells, run_sweep

GRID = {
    "recipes": ("dense", "magnitude"),
    "sparsities": (0.0, 0.5),
    "seeds": (0,),
    "battery": "quick",
    "eps": 0.1,
    "n": 40,
    "epochs": 1,
}
CLI_GRID = [
    "--recipes",
    "dense,magnitude",
    "--sparsities",
    "0,0.5",
    "--seeds",
    "0",
    "--battery",
    "quick",
    "--eps",
    "0.1",
    "--n",
    "40",
    "--epochs",
    "1",
]


def comparable(records: list) -> list[dict]:
    """A cell record without its wall-clock timings (the only thing allowed to differ between runs)."""
    drop = {"train_seconds", "score_seconds", "latency_ms", "compact_latency_ms", "speedup"}
    as_json = [r.to_json() if hasattr(r, "to_json") else r for r in records]  # CellRecords or stored dicts
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in as_json), key=lambda r: r["key"])


def per_sample(root: Path) -> dict[str, dict]:
    return {
        p.parent.parent.name: json.loads(p.read_text())["per_sample"] for p in root.glob("cells/*/score/results.json")
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    run_sweep(SweepSpec(**GRID), root)
    return root


def test_plan_reuses_one_parent_and_skips_dense_at_sparsity(reference):
    cells = plan_cells(SweepSpec(**GRID))
    labels = [(c.recipe, c.sparsity) for c in cells]
    assert labels[0] == ("dense", 0.0)  # the parent comes first
    assert ("dense", 0.5) not in labels  # a recipe without pruning has no sparse cells
    magnitude = [c for c in cells if c.recipe == "magnitude"]
    assert {c.parent_key for c in magnitude} == {cells[0].key}
    assert len({c.key for c in cells}) == len(cells)


def test_cells_reach_their_targets_and_share_examples(reference):
    records = json.loads((reference / "results.json").read_text())["cells"]
    for r in records:
        assert abs(r["achieved_sparsity"] - r["sparsity"]) <= 0.005
    assert len({r["config"]["data_fingerprint"] for r in records}) == 1


def test_rerun_recomputes_nothing(reference):
    before = {p: p.stat().st_mtime_ns for p in reference.glob("cells/*/**/*") if p.is_file()}
    run_sweep(SweepSpec(**GRID), reference)
    after = {p: p.stat().st_mtime_ns for p in reference.glob("cells/*/**/*") if p.is_file()}
    assert before == after


def test_truncated_cell_result_is_detected_and_recomputed(reference, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(reference, root)
    victim = next(root.glob("cells/*/cell.json"))
    victim.write_text(victim.read_text()[:40])
    results = next(p for p in root.glob("cells/*/score/results.json") if p.parent.parent != victim.parent)
    results.write_text(results.read_text()[:100])
    records = run_sweep(SweepSpec(**GRID), root)
    assert json.loads(victim.read_text())["key"] == victim.parent.name
    assert comparable(records) == comparable(json.loads((reference / "results.json").read_text())["cells"])
    assert per_sample(root) == per_sample(reference)


def test_resume_after_sigkill_matches_an_uninterrupted_run(reference, tmp_path):
    root = tmp_path / "killed"
    cmd = [sys.executable, "-m", "robustprune", "sweep", *CLI_GRID, "--out", str(root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(root.glob("cells/*/cell.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-sweep: at least one cell done, the next one in flight
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = len(list(root.glob("cells/*/cell.json")))
    assert 1 <= finished < 3 and not (root / "results.json").exists()  # really killed mid-sweep
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    resumed = json.loads((root / "results.json").read_text())["cells"]
    assert comparable(resumed) == comparable(json.loads((reference / "results.json").read_text())["cells"])
    assert per_sample(root) == per_sample(reference)
    # The report is identical too, but for the measured latency and cost tables at its end.
    build_sweep_report(reference)
    assert without_cost(root / "report.md") == without_cost(reference / "report.md")
    figures = sorted(p.name for p in (reference / "figures").glob("*.svg"))
    assert figures and figures == sorted(p.name for p in (root / "figures").glob("*.svg"))
    assert all((root / "figures" / f).read_bytes() == (reference / "figures" / f).read_bytes() for f in figures)


def without_cost(path: Path) -> str:
    text = path.read_text()
    assert "## Speed-up and activity vs sparsity" in text and "## Cost" in text
    return text.split("## Speed-up and activity vs sparsity")[0]


def test_process_pool_agrees_with_in_process(reference, tmp_path):
    records = run_sweep(SweepSpec(**GRID), tmp_path / "pool", executor="process", workers=2)
    assert comparable(records) == comparable(json.loads((reference / "results.json").read_text())["cells"])
    assert per_sample(tmp_path / "pool") == per_sample(reference)


def test_ray_agrees_with_in_process(reference, tmp_path, ray_local):
    records = run_sweep(SweepSpec(**GRID), tmp_path / "ray", executor="ray")
    assert comparable(records) == comparable(json.loads((reference / "results.json").read_text())["cells"])
    assert per_sample(tmp_path / "ray") == per_sample(reference)


def test_bad_sweeps():
    with pytest.raises(UsageError, match="impossible"):
        SweepSpec(recipes=("dense",), sparsities=(1.0,))
    with pytest.raises(UsageError, match="unknown recipe"):
        plan_cells(SweepSpec(recipes=("densse",)))
    with pytest.raises(UsageError, match="unknown executor"):
        run_sweep(SweepSpec(recipes=("dense",)), "/nonexistent", executor="dask")


def test_a_results_json_of_another_sweep_in_the_directory_is_dropped_when_a_sweep_starts(tmp_path):
    from robustprune.sweep.run import _drop_stale_results

    path = tmp_path / "results.json"
    path.write_text(json.dumps({"kind": "sweep", "cells": [{"key": "a"}, {"key": "b"}]}))
    _drop_stale_results(path, {"a", "b"})  # the same sweep run again: its complete results stay
    assert path.exists()
    _drop_stale_results(path, {"a", "c"})  # another configuration: until it ends, no results.json claims it
    assert not path.exists()
    path.write_text('{"kind": "sw')  # truncated: never trusted
    _drop_stale_results(path, {"a"})
    assert not path.exists()
    _drop_stale_results(path, {"a"})  # nothing there: nothing to do
