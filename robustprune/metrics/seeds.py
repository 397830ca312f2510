"""Statistics over seeds: the mean of a metric and a t interval for it (sweep bands and tables)."""

from __future__ import annotations

import math
from collections.abc import Sequence

Bounds = tuple[float | None, float | None]
CONFIDENCE = 0.95


def mean_band(
    values: Sequence[float], confidence: float = CONFIDENCE, bounds: Bounds = (None, None)
) -> tuple[float, float | None, float | None]:
    """(mean, lo, hi): a t interval for the mean over seeds, clipped to `bounds` (with 2-3 seeds t is large and the
    raw interval leaves the metric's range); no band (None, None) with a single seed."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None
    from scipy import stats

    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds[0] is not None:
        lo = max(lo, bounds[0])
    if bounds[1] is not None:
        hi = min(hi, bounds[1])
    return mean, lo, hi
