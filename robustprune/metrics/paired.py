"""Paired statistics between two models scored on the same examples: exact McNemar tests on discordant pairs."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from robustprune.errors import UsageError
from robustprune.metrics.accuracy import _as_bool_vector


def _discordant(a_correct: ArrayLike, b_correct: ArrayLike) -> tuple[np.ndarray, np.ndarray, int, int]:
    a = _as_bool_vector(a_correct, "a_correct")
    b = _as_bool_vector(b_correct, "b_correct")
    if a.shape != b.shape:
        raise UsageError(f"paired vectors differ in length: {a.size} vs {b.size} (score both on the same examples)")
    a_only = int(np.count_nonzero(a & ~b))
    b_only = int(np.count_nonzero(~a & b))
    return a, b, a_only, b_only


def mcnemar_test(a_correct: ArrayLike, b_correct: ArrayLike) -> dict[str, Any]:
    """Exact McNemar test: two-sided binomial test (p=1/2) on the discordant pairs of two paired 0/1 vectors.

    a_only = a right & b wrong, b_only = a wrong & b right. p_value is 1.0 when there are no discordant pairs;
    delta_pct = (acc_b - acc_a) * 100 (None when n == 0).
    """
    a, b, a_only, b_only = _discordant(a_correct, b_correct)
    n = int(a.size)
    m = a_only + b_only
    p = 1.0 if m == 0 else min(1.0, float(stats.binomtest(a_only, m, 0.5, alternative="two-sided").pvalue))
    return {
        "n": n,
        "a_only": a_only,
        "b_only": b_only,
        "delta_pct": (float(b.mean()) - float(a.mean())) * 100.0 if n else None,
        "p_value": p,
        "test": "mcnemar-exact",
    }


def one_sided_drop_pvalue(a_correct: ArrayLike, b_correct: ArrayLike) -> float:
    """Exact one-sided p-value that b is worse than a: P(X <= b_only), X ~ Binomial(a_only + b_only, 1/2).

    Small values mean b lost more examples than chance explains (H1: b_only < a_only); 1.0 with no discordant pairs.
    """
    _, _, a_only, b_only = _discordant(a_correct, b_correct)
    m = a_only + b_only
    if m == 0:
        return 1.0
    return min(1.0, float(stats.binom.cdf(b_only, m, 0.5)))
