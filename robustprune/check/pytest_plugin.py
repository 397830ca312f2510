"""pytest plugin (entry point `pytest11`): robustness regression tests against stored baselines.

    def test_pruned_model_keeps_its_robustness(robustness_baseline):
        result = robustprune.score(model, "digits", "quick", n=200)
        robustness_baseline(result, "baselines/pruned_mlp.json")   # relative to this test file

The first run writes a missing baseline and fails once saying so; after an intended change,
`pytest --robustprune-update-baselines` rewrites baselines;
afterwards the test fails when robustness dropped by more than chance explains (see `robustprune.check`).

pytest loads installed entry-point plugins in every session, so this module imports nothing heavy at load time: no
torch, numpy or scipy at the top, only inside the fixture's callable. Disable it with `-p no:robustprune`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

UPDATE_OPTION = "--robustprune-update-baselines"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robustprune")
    group.addoption(
        UPDATE_OPTION,
        action="store_true",
        default=False,
        help="rewrite stored robustness baselines from the current results instead of comparing",
    )
    group.addoption(
        "--robustprune-tolerance",
        type=float,
        default=None,
        metavar="PP",
        help="default allowed drop of an accuracy in percentage points before the paired test "
        "is consulted (default 1.0; a tolerance passed in the test wins)",
    )
    group.addoption(
        "--robustprune-alpha",
        type=float,
        default=None,
        metavar="ALPHA",
        help="default significance level of the one-sided paired test (default 0.05)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "robustness: a robustness regression test that compares a score result with a "
        "stored baseline (select with -m robustness)",
    )


@pytest.fixture
def robustprune_update_baselines(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to refresh baselines rather than check against them."""
    return bool(request.config.getoption(UPDATE_OPTION))


def _document(result: Any) -> dict[str, Any]:
    """A score document from a ScoreResult, a document dict, or a results.json path (or its directory)."""
    from robustprune.errors import UsageError
    from robustprune.results import load_document
    from robustprune.scoring.result import ScoreResult

    if isinstance(result, ScoreResult):
        doc = result.document
    elif isinstance(result, dict):
        doc = result
    elif isinstance(result, str | Path):
        doc = load_document(result)
    else:
        raise UsageError(
            f"robustness_baseline needs a ScoreResult, a score document or a results.json path, "
            f"got {type(result).__name__}"
        )
    if doc.get("kind") != "score":
        raise UsageError(
            f"robustness_baseline compares single score results, got a {doc.get('kind')!r} document; "
            "compare sweeps with `robustprune check`"
        )
    return doc


@pytest.fixture
def robustness_baseline(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """A callable `check(result, baseline_path, *, tolerance, alpha, calibration_tolerance, nll_tolerance)`.

    Unset limits take `robustprune check`'s defaults (1 point, alpha 0.05, ECE +0.02, NLL +0.1).

    With --robustprune-update-baselines it writes `result` (its full score document, atomically) to `baseline_path`
    and passes. Otherwise it compares `result` with the stored baseline (`robustprune.check.compare`) and fails
    the test with the comparison table when robustness dropped by more than chance explains. A missing baseline is
    written from `result` and the test fails once, saying so. A relative `baseline_path` is relative to the test
    file's directory.
    Returns the Comparison (None when updating).
    """
    config = request.config
    update = bool(config.getoption(UPDATE_OPTION))
    test_dir = Path(str(request.path)).parent

    def check(
        result: Any,
        baseline_path: str | Path,
        *,
        tolerance: float | None = None,
        alpha: float | None = None,
        calibration_tolerance: float | None = None,
        nll_tolerance: float | None = None,
    ) -> Any:
        from robustprune.atomic import write_json
        from robustprune.check.compare import compare

        path = Path(baseline_path)
        if not path.is_absolute():
            path = test_dir / path
        doc = _document(result)
        if update:
            write_json(path, doc)
            return None
        if not path.exists():
            # As pytest-regressions does: write it now (the expensive score need not run twice) and fail this once,
            # so a baseline never appears unnoticed; the next run compares against it.
            write_json(path, doc)
            pytest.fail(
                f"no robustness baseline at {path}: it was written from this result; review and commit it, the next "
                f"run compares against it (`pytest {UPDATE_OPTION}` rewrites baselines after an intended change)",
                pytrace=False,
            )
        tol = tolerance if tolerance is not None else config.getoption("--robustprune-tolerance")
        alp = alpha if alpha is not None else config.getoption("--robustprune-alpha")
        given = {
            "tolerance": tol,
            "alpha": alp,
            "calibration_tolerance": calibration_tolerance,
            "nll_tolerance": nll_tolerance,
        }
        # What is not given falls back to compare's defaults: the same rule as `robustprune check`.
        comparison = compare(doc, path, **{k: v for k, v in given.items() if v is not None})
        # Name the new side in the table header: the path it came from, or the test that produced it.
        comparison.results = str(result) if isinstance(result, str | Path) else f"the result of {request.node.nodeid}"
        if not comparison.passed:
            pytest.fail("robustness regression against the stored baseline\n" + comparison.render(), pytrace=False)
        return comparison

    return check
