"""A sweep over the seed methods that prune in new ways: structured channels (measured speed-up of the compacted
model), DAM's gates, and AP's rounds. Their cells carry what the report's efficiency table shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustprune.reporting.sweep_report import build_sweep_report
from robustprune.sweep import SweepSpec, run_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("structured_sweep")
    spec = SweepSpec(
        recipes=("structured", "dam", "magnitude_ap"),
        sparsities=(0.5,),
        seeds=(0,),
        battery="quick",
        eps=0.1,
        n=16,
        epochs=4,
    )
    records = run_sweep(spec, root)
    return root, records


def test_structured_cells_are_compacted_and_timed(sweep: tuple[Path, list]) -> None:
    _, records = sweep
    by_recipe = {r.recipe: r for r in records}
    for name in ("structured", "dam"):
        record = by_recipe[name]
        assert record.channel_sparsity == pytest.approx(0.5, abs=0.01)  # their target is a share of channels
        assert record.compact_params < record.params and record.compact_macs < record.macs
        assert record.latency_ms > 0 and record.compact_latency_ms > 0
        assert record.speedup == pytest.approx(record.latency_ms / record.compact_latency_ms)
    ap = by_recipe["magnitude_ap"]
    assert ap.channel_sparsity is None and ap.compact_params == ap.params  # unstructured: nothing to remove
    assert abs(ap.achieved_sparsity - 0.5) <= 0.005
    for record in records:
        assert 0 <= record.dead_relu_eval <= 1 and 0 <= record.dead_relu_train <= 1


def test_report_shows_speedup_and_activity(sweep: tuple[Path, list]) -> None:
    root, _ = sweep
    build_sweep_report(root)
    markdown = (root / "report.md").read_text()
    assert "## Speed-up and activity vs sparsity" in markdown
    rows = [line for line in markdown.splitlines() if line.split("|")[1:2] == [" structured   "]]
    assert any(" x" in row and "→" in row for row in rows)
    html = (root / "report.html").read_text()
    assert 'id="efficiency"' in html and "dead ReLU in training" in html
