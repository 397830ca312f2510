"""The pytest plugin: the `robustness_baseline` fixture (pass, fail, missing baseline, update), the marker, and a
light import (no torch at plugin load)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sweep_factory import make_sweep

from robustprune.atomic import write_json

pytest_plugins = ["pytester"]

INNER = """
import json
from pathlib import Path

import pytest


@pytest.mark.robustness
def test_result_keeps_its_robustness(robustness_baseline):
    result = json.loads(Path("result.json").read_text())
    comparison = robustness_baseline(result, "baselines/model.json")
    if comparison is not None:
        assert comparison.passed


def test_result_as_a_path(robustness_baseline):
    robustness_baseline(Path("result.json").resolve(), Path("baselines/model.json").resolve(), tolerance=1.0,
                        alpha=0.05)
"""


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """A dense and a heavily pruned (much weaker) score document, scored on the same 40 digits."""
    from sweep_factory import DEFAULT_PLAN

    root = tmp_path_factory.mktemp("sweep")
    plan = tuple(p for p in DEFAULT_PLAN if p.seed == 0 and p.recipe in ("dense", "magnitude") and p.sparsity != 0.5)
    records = make_sweep(root, plan, write_results=False)
    docs = {r.recipe: json.loads((root / r.result).read_text()) for r in records}
    assert docs["magnitude"]["robust_acc"] < docs["dense"]["robust_acc"] - 20, "the pruned model should be weaker"
    return {"strong": docs["dense"], "weak": docs["magnitude"]}


def setup_inner(pytester: pytest.Pytester, result: dict[str, Any], baseline: dict[str, Any] | None) -> Path:
    pytester.makepyfile(test_inner=INNER)
    write_json(pytester.path / "result.json", result)
    path = pytester.path / "baselines" / "model.json"
    if baseline is not None:
        write_json(path, baseline)
    return path


def test_same_result_passes(pytester, documents):
    setup_inner(pytester, documents["strong"], documents["strong"])
    run = pytester.runpytest("-p", "no:cacheprovider")
    run.assert_outcomes(passed=2)


def test_weaker_result_fails_with_the_comparison_table(pytester, documents):
    setup_inner(pytester, documents["weak"], documents["strong"])
    run = pytester.runpytest("-p", "no:cacheprovider")
    run.assert_outcomes(failed=2)
    text = run.stdout.str()
    assert "robustness regression against the stored baseline" in text
    assert re.search(r"score\s+robust acc \(worst case\).*FAIL", text)
    assert "FAIL: " in text


def test_missing_baseline_is_written_and_fails_once(pytester, documents):
    path = setup_inner(pytester, documents["strong"], None)
    run = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = run.parseoutcomes()
    assert outcomes.get("failed") == 1  # the first test to need it writes it and fails; the next compares and passes
    run.stdout.fnmatch_lines(["*no robustness baseline at*it was written from this result*"])
    assert json.loads(path.read_text()) == documents["strong"]
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_update_option_writes_the_baseline_then_the_check_passes(pytester, documents):
    stale = copy.deepcopy(documents["strong"])
    path = setup_inner(pytester, documents["weak"], stale)  # an outdated baseline: the new result is weaker
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(failed=2)
    run = pytester.runpytest("-p", "no:cacheprovider", "--robustprune-update-baselines")
    run.assert_outcomes(passed=2)
    assert json.loads(path.read_text()) == documents["weak"]
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_tolerance_option_is_the_default_for_the_fixture(pytester, documents):
    setup_inner(pytester, documents["weak"], documents["strong"])
    pytester.makepyfile(
        test_inner="""
import json
from pathlib import Path


def test_uses_command_line_tolerance(robustness_baseline):
    robustness_baseline(json.loads(Path("result.json").read_text()), "baselines/model.json",
                        calibration_tolerance=10.0, nll_tolerance=10.0)
"""
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(failed=1)
    pytester.runpytest("-p", "no:cacheprovider", "--robustprune-tolerance", "100").assert_outcomes(passed=1)


def test_marker_is_registered(pytester):
    run = pytester.runpytest("--markers")
    run.stdout.fnmatch_lines(["@pytest.mark.robustness:*baseline*"])
    pytester.makepyfile(
        test_marked="""
import pytest

@pytest.mark.robustness
def test_marked():
    pass
"""
    )
    pytester.runpytest("--strict-markers", "-m", "robustness").assert_outcomes(passed=1)


def test_plugin_load_imports_nothing_heavy():
    code = (
        "import sys, robustprune.check.pytest_plugin; heavy = [m for m in ('torch', 'numpy', 'scipy', 'matplotlib') "
        "if m in sys.modules]; assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
