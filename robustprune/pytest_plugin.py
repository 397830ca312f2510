"""pytest plugin (entry point `pytest11`): options for robustness regression tests.

Loaded by every pytest run in an environment with robustprune installed, so it imports nothing heavy at load.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robustprune")
    group.addoption("--robustprune-update-baselines", action="store_true", default=False,
                    help="rewrite stored robustness baselines from the current results instead of comparing")


@pytest.fixture
def robustprune_update_baselines(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to refresh baselines rather than check against them."""
    return bool(request.config.getoption("--robustprune-update-baselines"))
