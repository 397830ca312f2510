"""Calibration metrics in float64: ECE (equal-width / equal-mass), MCE, classwise ECE, NLL, Brier, AURC.

Conventions (stored beside every number by `calibration_summary`):
- top-label confidence = max probability, prediction = argmax (ties -> lowest index, as np.argmax);
- bin i holds confidences in (edges[i], edges[i+1]], except bin 0 which is [0, edges[1]]; a confidence of exactly
  1.0 always lands in the LAST bin (torchmetrics #3510 puts it in a hidden extra bin and inflates ECE);
- equal-mass bins can be empty when confidences tie across a quantile; the bin count B is still reported as asked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from robustprune.errors import UsageError
from robustprune.metrics.accuracy import _as_bool_vector, _to_numpy

BINNING_SCHEMES = ("equal_width", "equal_mass")
ROW_SUM_TOL = 1e-4
# float32 softmax can overshoot [0, 1] by a few ulps; tolerate that much and clip, reject anything larger.
_PROB_SLACK = 1e-6


# ---------------------------------------------------------------- validation


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise UsageError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def _check_scheme(scheme: str) -> None:
    if scheme not in BINNING_SCHEMES:
        raise UsageError(f"unknown binning scheme {scheme!r}; use one of {', '.join(BINNING_SCHEMES)}")


def _as_unit_vector(x: ArrayLike, name: str) -> np.ndarray:
    """1-D float64 array of finite values in [0, 1]."""
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise UsageError(f"{name} must be 1-D, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise UsageError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise UsageError(f"{name} contains NaN or infinite values")
    if arr.size and (arr.min() < -_PROB_SLACK or arr.max() > 1.0 + _PROB_SLACK):
        raise UsageError(f"{name} must lie in [0, 1], got range [{arr.min():.6g}, {arr.max():.6g}]")
    return np.clip(arr, 0.0, 1.0)


def _conf_correct(conf: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    c = _as_unit_vector(conf, "conf")
    ok = _as_bool_vector(correct, "correct")
    if c.shape != ok.shape:
        raise UsageError(f"conf and correct differ in length: {c.size} vs {ok.size}")
    return c, ok


def _as_probs(probs: ArrayLike) -> np.ndarray:
    """(N, K) float64 probabilities: finite, in [0, 1], rows summing to 1 within ROW_SUM_TOL."""
    p = _to_numpy(probs)
    if p.ndim != 2 or p.shape[1] < 1:
        raise UsageError(f"probs must be a 2-D (N, K) array with K >= 1, got shape {p.shape}")
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise UsageError(f"probs must be numeric, got dtype {p.dtype}")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise UsageError("probs contains NaN or infinite values")
    if p.size and (p.min() < -_PROB_SLACK or p.max() > 1.0 + _PROB_SLACK):
        raise UsageError(f"probs must lie in [0, 1], got range [{p.min():.6g}, {p.max():.6g}] (logits? use softmax64)")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOL)
    if bad.size:
        i = int(bad[0])
        raise UsageError(
            f"probs rows must sum to 1 within {ROW_SUM_TOL:g}: row {i} sums to {sums[i]:.6g} "
            f"({bad.size} bad rows; pass probabilities, e.g. softmax64(logits))"
        )
    return np.clip(p, 0.0, 1.0)


def _as_labels(labels: ArrayLike, n: int, k: int) -> np.ndarray:
    y = _to_numpy(labels)
    if y.ndim != 1:
        raise UsageError(f"labels must be 1-D, got shape {y.shape}")
    if y.shape[0] != n:
        raise UsageError(f"labels and probs differ in length: {y.shape[0]} vs {n}")
    if np.issubdtype(y.dtype, np.floating):
        # Labels that went through a float array (e.g. JSON/CSV) are fine as long as they are whole numbers.
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise UsageError("labels must be integers")
    elif not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise UsageError(f"labels must lie in [0, {k - 1}] for {k} classes, got range [{y.min()}, {y.max()}]")
    return y


def _require_nonempty(n: int, what: str) -> None:
    if n == 0:
        raise UsageError(f"{what} needs at least one example")


# ---------------------------------------------------------------- binning


def bin_edges(conf: ArrayLike, n_bins: int, scheme: str) -> np.ndarray:
    """B+1 non-decreasing edges with edges[0] = 0 and edges[-1] = 1.

    equal_width: uniform on [0, 1]. equal_mass: interior edge i sits midway between the sorted confidences at
    positions floor(i*N/B) - 1 and floor(i*N/B), so every bin gets floor/ceil(N/B) samples unless confidences tie
    across an edge (then some bins are empty). With no samples, equal_mass falls back to equal width.
    """
    b = _check_n_bins(n_bins)
    _check_scheme(scheme)
    c = _as_unit_vector(conf, "conf")
    n = c.size
    if scheme == "equal_width" or n == 0:
        return np.linspace(0.0, 1.0, b + 1)
    s = np.sort(c)
    m = (np.arange(1, b) * n) // b  # number of samples below interior edge i
    edges = np.empty(b + 1, dtype=np.float64)
    edges[0], edges[-1] = 0.0, 1.0
    # m == 0 happens only when N < B: such edges sit at 0 and their bins stay empty.
    lower = np.where(m > 0, s[np.maximum(m - 1, 0)], 0.0)
    upper = s[np.minimum(m, n - 1)]
    edges[1:-1] = np.where(m > 0, (lower + upper) / 2.0, 0.0)
    return edges


def assign_bins(conf: ArrayLike, edges: ArrayLike) -> np.ndarray:
    """Bin index (int64, 0..B-1) of each confidence: (edges[i], edges[i+1]], bin 0 closed at 0, 1.0 -> last bin."""
    c = _as_unit_vector(conf, "conf")
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) < 0) or not np.all(np.isfinite(e)):
        raise UsageError("edges must be a finite, non-decreasing 1-D array with at least 2 entries")
    n_bins = e.size - 1
    # side="left" finds the first edge >= c, so c sits in (edges[j-1], edges[j]]; clipping folds c == edges[0] into
    # bin 0 and anything beyond the last edge into the last bin.
    idx = np.searchsorted(e, c, side="left") - 1
    idx = np.clip(idx, 0, n_bins - 1)
    # Duplicate edges at 1.0 (equal-mass with saturated confidences) would otherwise pull 1.0 into an earlier bin.
    idx[c >= e[-1]] = n_bins - 1
    return idx.astype(np.int64)


def _bin_stats(conf: np.ndarray, hits: np.ndarray, n_bins: int, scheme: str):
    """Per-bin (edges, counts, summed confidence, summed hits) for validated float64 conf and bool/0-1 hits."""
    edges = bin_edges(conf, n_bins, scheme)
    idx = assign_bins(conf, edges)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(idx, weights=hits.astype(np.float64), minlength=n_bins)
    return edges, counts, conf_sum, hit_sum


def _weighted_gap(conf: np.ndarray, hits: np.ndarray, n_bins: int, scheme: str) -> float:
    _, _, conf_sum, hit_sum = _bin_stats(conf, hits, n_bins, scheme)
    # sum_b (n_b/N)|acc_b - conf_b| = (1/N) sum_b |hits_b - conf_sum_b|: no division by empty counts needed.
    return float(np.abs(hit_sum - conf_sum).sum() / conf.size)


def reliability_bins(
    conf: ArrayLike, correct: ArrayLike, n_bins: int = 15, scheme: str = "equal_width"
) -> list[dict[str, Any]]:
    """One dict per bin (empty bins included): lo, hi, count, accuracy, confidence, gap = |accuracy - confidence|.

    accuracy / confidence / gap are None for empty bins. Works with zero examples (all bins empty).
    """
    c, ok = _conf_correct(conf, correct)
    edges, counts, conf_sum, hit_sum = _bin_stats(c, ok, n_bins, scheme)
    out = []
    for i in range(len(counts)):
        n_b = int(counts[i])
        acc = float(hit_sum[i] / n_b) if n_b else None
        mean_conf = float(conf_sum[i] / n_b) if n_b else None
        out.append(
            {
                "lo": float(edges[i]),
                "hi": float(edges[i + 1]),
                "count": n_b,
                "accuracy": acc,
                "confidence": mean_conf,
                "gap": abs(acc - mean_conf) if n_b else None,
            }
        )
    return out


# ---------------------------------------------------------------- top-label metrics


def expected_calibration_error(
    conf: ArrayLike, correct: ArrayLike, n_bins: int = 15, scheme: str = "equal_width"
) -> float:
    """ECE = sum_b (n_b / N) |acc_b - conf_b| (l1, plug-in estimator; biased upward at small N / large B)."""
    c, ok = _conf_correct(conf, correct)
    _require_nonempty(c.size, "expected_calibration_error")
    return _weighted_gap(c, ok, _check_n_bins(n_bins), scheme)


def maximum_calibration_error(
    conf: ArrayLike, correct: ArrayLike, n_bins: int = 15, scheme: str = "equal_width", min_count: int = 1
) -> float | None:
    """MCE = max |acc_b - conf_b| over bins holding at least `min_count` samples; None when no bin qualifies."""
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise UsageError(f"min_count must be a positive integer, got {min_count!r}")
    c, ok = _conf_correct(conf, correct)
    _require_nonempty(c.size, "maximum_calibration_error")
    _, counts, conf_sum, hit_sum = _bin_stats(c, ok, _check_n_bins(n_bins), scheme)
    keep = counts >= min_count
    if not keep.any():
        return None
    return float(np.max(np.abs(hit_sum[keep] - conf_sum[keep]) / counts[keep]))


def classwise_ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15, scheme: str = "equal_width") -> float:
    """Mean over classes k of the binned gap between probs[:, k] and the indicator labels == k (Kull et al. 2019).

    Equal-mass edges are computed per class from that class's probabilities.
    """
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0], p.shape[1])
    _require_nonempty(p.shape[0], "classwise_ece")
    b = _check_n_bins(n_bins)
    _check_scheme(scheme)
    per_class = [_weighted_gap(p[:, k], y == k, b, scheme) for k in range(p.shape[1])]
    return float(np.mean(per_class))


def negative_log_likelihood(probs: ArrayLike, labels: ArrayLike, eps: float = 1e-12) -> float:
    """Mean -log p(true class); probabilities are clamped at `eps` first so a confident miss stays finite."""
    if not 0.0 < eps < 1.0:
        raise UsageError(f"eps must lie in (0, 1), got {eps}")
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0], p.shape[1])
    _require_nonempty(p.shape[0], "negative_log_likelihood")
    p_true = p[np.arange(p.shape[0]), y]
    return float(np.mean(-np.log(np.maximum(p_true, eps))))


def brier_score(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multiclass Brier: mean over samples of sum_k (p_k - 1[y = k])^2, range [0, 2]; NOT halved, NOT divided by K."""
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0], p.shape[1])
    _require_nonempty(p.shape[0], "brier_score")
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def aurc(conf: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve: mean over k = 1..N of the error rate among the k most confident samples.

    Tie rule: samples with equal confidence form a group, and the result is the exact average over every ordering of
    each group. A group of size g with e errors that follows s samples carrying E errors contributes, at its j-th
    position, risk (E + e * j / g) / (s + j); risk at fixed coverage is linear in the error count, so this expected
    count gives the expected risk. The value therefore does not depend on input order.
    """
    c, ok = _conf_correct(conf, correct)
    n = c.size
    _require_nonempty(n, "aurc")
    order = np.argsort(-c, kind="stable")
    cs = c[order]
    err = (~ok[order]).astype(np.float64)
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    ends = np.r_[starts[1:], n]
    cum = np.r_[0.0, np.cumsum(err)]
    group = np.repeat(np.arange(starts.size), ends - starts)
    pos = np.arange(n)
    s = starts[group]
    g = (ends - starts)[group]
    before = cum[s]
    inside = cum[ends[group]] - before
    j = pos - s + 1
    risk = (before + inside * j / g) / (pos + 1)
    return float(risk.mean())


# ---------------------------------------------------------------- helpers for callers


def softmax64(logits: ArrayLike) -> np.ndarray:
    """Numerically stable softmax over the last axis, in float64 (subtracting the row max avoids overflow)."""
    z = _to_numpy(logits)
    if z.ndim < 1 or z.shape[-1] < 1:
        raise UsageError(f"logits need a non-empty last axis, got shape {z.shape}")
    if not (np.issubdtype(z.dtype, np.floating) or np.issubdtype(z.dtype, np.integer)):
        raise UsageError(f"logits must be numeric, got dtype {z.dtype}")
    z = z.astype(np.float64)
    if not np.all(np.isfinite(z)):
        raise UsageError("logits contain NaN or infinite values")
    z = z - z.max(axis=-1, keepdims=True)
    ez = np.exp(z)
    return ez / ez.sum(axis=-1, keepdims=True)


def calibration_summary(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15, min_count_mce: int = 1) -> dict:
    """Every calibration number with its binning, JSON-ready; values are None when there are no examples."""
    p = _as_probs(probs)
    y = _as_labels(labels, p.shape[0], p.shape[1])
    b = _check_n_bins(n_bins)
    if isinstance(min_count_mce, bool) or not isinstance(min_count_mce, (int, np.integer)) or min_count_mce < 1:
        raise UsageError(f"min_count_mce must be a positive integer, got {min_count_mce!r}")
    n = int(p.shape[0])
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    empty = n == 0

    def val(fn, *args, **kwargs):
        return None if empty else fn(*args, **kwargs)

    width = {"binning": "equal_width", "n_bins": b}
    return {
        "n": n,
        "ece": {"value": val(expected_calibration_error, conf, correct, b, "equal_width"), **width},
        "ece_equal_mass": {
            "value": val(expected_calibration_error, conf, correct, b, "equal_mass"),
            "binning": "equal_mass",
            "n_bins": b,
        },
        "mce": {
            "value": val(maximum_calibration_error, conf, correct, b, "equal_width", int(min_count_mce)),
            **width,
            "min_count": int(min_count_mce),
        },
        "classwise_ece": {"value": val(classwise_ece, p, y, b, "equal_width"), **width},
        "nll": {"value": val(negative_log_likelihood, p, y), "eps": 1e-12},
        "brier": {"value": val(brier_score, p, y), "convention": "sum over classes, range [0,2]"},
        "aurc": {"value": val(aurc, conf, correct)},
        "reliability": {**width, "bins": reliability_bins(conf, correct, b, "equal_width")},
    }
