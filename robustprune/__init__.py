"""robustprune: accuracy, adversarial robustness, calibration and sparsity of pruned networks.

The Python API: `score` (a model under a battery -> ScoreResult), `save_result` (write its results.json, reports
and probabilities), `load_result` (read one back). Everything else lives in the rooms the package's folders name.
"""

import importlib
from typing import Any

from robustprune.version import __version__

# Lazy: the pytest plugin imports this package in every pytest session, so nothing heavy at import time.
_API = {
    "score": "robustprune.scoring",
    "ScoreResult": "robustprune.scoring",
    "save_result": "robustprune.results",
    "load_result": "robustprune.results",
}

__all__ = ["ScoreResult", "__version__", "load_result", "save_result", "score"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'robustprune' has no attribute {name!r}")
