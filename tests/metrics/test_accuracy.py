"""Accuracy intervals and paired tests against known values and scipy's exact binomial test."""

import numpy as np
import pytest
from scipy import stats

from robustprune.errors import UsageError
from robustprune.metrics import (
    accuracy_with_ci,
    clopper_pearson_interval,
    mcnemar_test,
    one_sided_drop_pvalue,
    wilson_interval,
)


def test_wilson_known_value():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)


def test_clopper_pearson_known_value():
    lo, hi = clopper_pearson_interval(8, 10)
    assert lo == pytest.approx(0.4439, abs=1e-4)
    assert hi == pytest.approx(0.9748, abs=1e-4)


def test_clopper_pearson_is_wider_than_wilson():
    # CP is conservative; at k=8, n=10 it encloses the Wilson interval.
    w, cp = wilson_interval(8, 10), clopper_pearson_interval(8, 10)
    assert cp[0] < w[0] and cp[1] > w[1]


@pytest.mark.parametrize("interval", [wilson_interval, clopper_pearson_interval])
def test_edges_and_point_estimate(interval):
    lo, hi = interval(0, 20)
    assert lo == 0.0 and 0.0 < hi < 0.25
    lo, hi = interval(20, 20)
    assert hi == 1.0 and 0.75 < lo < 1.0
    assert interval(0, 0) == (0.0, 1.0)
    for k in range(0, 31, 3):
        lo, hi = interval(k, 30)
        assert 0.0 <= lo <= k / 30 <= hi <= 1.0
    # Higher confidence -> wider interval.
    a, b = interval(7, 30, 0.9), interval(7, 30, 0.99)
    assert b[0] < a[0] and b[1] > a[1]


def test_clopper_pearson_zero_successes_closed_form():
    # With k = 0 the upper bound is 1 - (alpha/2)^(1/n).
    assert clopper_pearson_interval(0, 20)[1] == pytest.approx(1 - 0.025 ** (1 / 20), rel=1e-9)


def test_accuracy_with_ci_percent():
    r = accuracy_with_ci(np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0]))
    assert r["value"] == pytest.approx(80.0)
    assert r["ci"] == pytest.approx([49.016, 94.332], abs=1e-3)
    assert (r["ci_method"], r["confidence"], r["k"], r["n"]) == ("wilson", 0.95, 8, 10)
    cp = accuracy_with_ci([True] * 8 + [False] * 2, method="clopper-pearson")
    assert cp["ci"] == pytest.approx([44.390, 97.479], abs=1e-3)
    assert cp["ci_method"] == "clopper-pearson"


def test_accuracy_with_ci_empty():
    r = accuracy_with_ci(np.array([], dtype=bool))
    assert r["value"] is None and r["ci"] == [0.0, 100.0] and r["n"] == 0


def test_mcnemar_identical_vectors():
    a = np.array([1, 0, 1, 1, 0], dtype=bool)
    r = mcnemar_test(a, a.copy())
    assert r == {"n": 5, "a_only": 0, "b_only": 0, "delta_pct": 0.0, "p_value": 1.0, "test": "mcnemar-exact"}
    assert one_sided_drop_pvalue(a, a) == 1.0


def test_mcnemar_hand_case():
    # 20 examples: 12 both right, 7 only a right, 1 only b right.
    a = np.array([1] * 12 + [1] * 7 + [0] * 1, dtype=bool)
    b = np.array([1] * 12 + [0] * 7 + [1] * 1, dtype=bool)
    r = mcnemar_test(a, b)
    assert (r["a_only"], r["b_only"], r["n"]) == (7, 1, 20)
    assert r["delta_pct"] == pytest.approx((13 / 20 - 19 / 20) * 100)
    expected = stats.binomtest(7, 8, 0.5).pvalue  # two-sided: 2 * P(X <= 1) = 18/256
    assert r["p_value"] == pytest.approx(expected, rel=1e-12)
    assert r["p_value"] == pytest.approx(18 / 256, rel=1e-12)
    # One-sided drop: P(X <= 1 | 8, 1/2) = 9/256, half the two-sided value here.
    assert one_sided_drop_pvalue(a, b) == pytest.approx(9 / 256, rel=1e-12)
    # b better than a: no evidence of a drop.
    assert one_sided_drop_pvalue(b, a) == pytest.approx(stats.binom.cdf(7, 8, 0.5), rel=1e-12)
    assert one_sided_drop_pvalue(b, a) > 0.9


def test_mcnemar_symmetric_p_value():
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.7, rng.random(200) < 0.6
    assert mcnemar_test(a, b)["p_value"] == pytest.approx(mcnemar_test(b, a)["p_value"])
    assert mcnemar_test(a, b)["delta_pct"] == pytest.approx(-mcnemar_test(b, a)["delta_pct"])


@pytest.mark.parametrize(
    "call",
    [
        lambda: mcnemar_test([1, 0, 1], [1, 0]),
        lambda: one_sided_drop_pvalue([1, 0, 1], [1, 0]),
        lambda: accuracy_with_ci([1, 0, 2]),
        lambda: accuracy_with_ci([[1, 0], [0, 1]]),
        lambda: accuracy_with_ci([1, 0, 1], method="agresti"),
        lambda: accuracy_with_ci([0.5, 1.0]),
        lambda: accuracy_with_ci(["a", "b"]),
        lambda: wilson_interval(11, 10),
        lambda: wilson_interval(-1, 10),
        lambda: clopper_pearson_interval(3, 10, confidence=1.0),
        lambda: wilson_interval(2.5, 10),
    ],
)
def test_bad_input_raises_usage_error(call):
    with pytest.raises(UsageError):
        call()
