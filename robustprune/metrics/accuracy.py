"""Accuracy with binomial confidence intervals, and paired tests between two models scored on the same examples.

Percentages (0-100) in the dict results, fractions (0-1) from the interval functions. Plain floats, no rounding.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from robustprune.errors import UsageError

CI_METHODS = ("wilson", "clopper-pearson")


def _to_numpy(x: Any) -> np.ndarray:
    # Accept torch tensors without importing torch (detach first: np.asarray refuses tensors that need grad).
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_bool_vector(x: ArrayLike, name: str) -> np.ndarray:
    """1-D boolean view of `x`; integers/floats are accepted only when every value is 0 or 1."""
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise UsageError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise UsageError(f"{name} must be boolean (or 0/1 numbers), got dtype {arr.dtype}")
    if not np.all((arr == 0) | (arr == 1)):
        raise UsageError(f"{name} must hold only 0/1 (or True/False) values")
    return arr.astype(bool)


def _check_counts(k: int, n: int, confidence: float) -> tuple[int, int]:
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (k, n)):
        raise UsageError(f"k and n must be integers, got k={k!r}, n={n!r}")
    if not 0 <= k <= n:
        raise UsageError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not isinstance(confidence, (int, float, np.floating)) or not 0.0 < confidence < 1.0:
        raise UsageError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return int(k), int(n)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials, as fractions in [0, 1]; n == 0 gives (0.0, 1.0)."""
    k, n = _check_counts(k, n, confidence)
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    p = k / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / (1.0 + z2n)
    # The closed form is exactly 0 / 1 at k == 0 / k == n; pin those so rounding cannot leave e.g. -1e-17.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def wilson_pct(accuracy: float, n: int) -> tuple[float, float] | None:
    """The 95 % Wilson score interval, in %, of an accuracy in % measured on n examples (None when the accuracy
    is not a share of n: then no interval is shown rather than a wrong one)."""
    k = accuracy * n / 100.0
    if n <= 0 or not -1e-6 <= k <= n + 1e-6 or abs(k - round(k)) > 1e-6 * max(1.0, n):
        return None
    lo, hi = wilson_interval(round(k), n)
    return 100.0 * lo, 100.0 * hi


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval from beta quantiles, as fractions; conservative at every n."""
    k, n = _check_counts(k, n, confidence)
    if n == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2.0, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1.0 - alpha / 2.0, k + 1, n - k))
    return lo, hi


def accuracy_with_ci(correct: ArrayLike, method: str = "wilson", confidence: float = 0.95) -> dict[str, Any]:
    """Accuracy in percent with a binomial interval.

    Returns {"value": pct or None when n == 0, "ci": [lo_pct, hi_pct], "ci_method", "confidence", "k", "n"}.
    """
    if method not in CI_METHODS:
        raise UsageError(f"unknown CI method {method!r}; use one of {', '.join(CI_METHODS)}")
    c = _as_bool_vector(correct, "correct")
    n = int(c.size)
    k = int(c.sum())
    interval = wilson_interval if method == "wilson" else clopper_pearson_interval
    lo, hi = interval(k, n, confidence)
    return {
        "value": 100.0 * k / n if n else None,
        "ci": [100.0 * lo, 100.0 * hi],
        "ci_method": method,
        "confidence": float(confidence),
        "k": k,
        "n": n,
    }
