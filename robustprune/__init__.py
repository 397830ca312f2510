"""robustprune: accuracy, adversarial robustness, calibration and sparsity of pruned networks."""

from typing import Any

from robustprune.version import __version__

__all__ = ["ScoreResult", "__version__", "score"]


def __getattr__(name: str) -> Any:
    # Lazy: the pytest plugin imports this package in every pytest session, so no torch at import time.
    if name in ("score", "ScoreResult"):
        from robustprune import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module 'robustprune' has no attribute {name!r}")
