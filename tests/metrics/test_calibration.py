"""Calibration metrics: hand-computed cases, scikit-learn oracles for NLL / Brier, binning edge cases."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from robustprune.errors import UsageError
from robustprune.metrics import (
    assign_bins,
    aurc,
    bin_edges,
    brier_score,
    calibration_summary,
    classwise_ece,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    softmax64,
)


def _dirichlet(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(k), size=n), rng.integers(0, k, size=n)


# ---------------------------------------------------------------- NLL and Brier vs scikit-learn


@pytest.mark.parametrize("k", [2, 3, 10])
def test_nll_matches_sklearn_log_loss(k):
    probs, labels = _dirichlet(300, k, seed=k)
    assert negative_log_likelihood(probs, labels) == pytest.approx(
        log_loss(labels, probs, labels=list(range(k))), abs=1e-10
    )


@pytest.mark.parametrize("k", [3, 10])
def test_brier_matches_sklearn_multiclass(k):
    probs, labels = _dirichlet(300, k, seed=100 + k)
    ours = brier_score(probs, labels)
    # sklearn 1.9.1 sums (p_k - 1[y=k])^2 over the K columns and averages over samples; scale_by_half="auto" halves
    # only when K < 3, so for K >= 3 the default equals our un-halved [0, 2] convention exactly.
    assert ours == pytest.approx(brier_score_loss(labels, probs, labels=list(range(k))), abs=1e-10)
    assert ours == pytest.approx(brier_score_loss(labels, probs, labels=list(range(k)), scale_by_half=False), abs=1e-10)


def test_brier_matches_sklearn_binary_relation():
    probs, labels = _dirichlet(300, 2, seed=7)
    # Binary: sklearn's default ("auto") is HALF of our sum-over-both-classes value; scale_by_half=False is equal.
    assert brier_score(probs, labels) == pytest.approx(2 * brier_score_loss(labels, probs[:, 1]), abs=1e-10)
    assert brier_score(probs, labels) == pytest.approx(
        brier_score_loss(labels, probs, labels=[0, 1], scale_by_half=False), abs=1e-10
    )


def test_brier_extremes_and_range():
    # Confident and wrong: (1-0)^2 + (0-1)^2 = 2; confident and right: 0; uniform over K: (K-1)/K.
    assert brier_score([[1.0, 0.0, 0.0]], [1]) == 2.0
    assert brier_score([[0.0, 1.0, 0.0]], [1]) == 0.0
    assert brier_score(np.full((4, 4), 0.25), [0, 1, 2, 3]) == pytest.approx(0.75)
    probs, labels = _dirichlet(500, 5, seed=3)
    assert 0.0 <= brier_score(probs, labels) <= 2.0


def test_nll_hand_and_clamp():
    assert negative_log_likelihood([[0.5, 0.5], [0.25, 0.75]], [0, 1]) == pytest.approx(
        (math.log(2) - math.log(0.75)) / 2
    )
    # p_true = 0 is clamped at eps, so the loss is finite: -log(1e-12).
    assert negative_log_likelihood([[1.0, 0.0]], [1]) == pytest.approx(-math.log(1e-12))


# ---------------------------------------------------------------- binning


def test_confidence_one_lands_in_last_bin_and_zero_in_first():
    edges = bin_edges([0.0, 1.0], 15, "equal_width")
    assert edges[0] == 0.0 and edges[-1] == 1.0 and len(edges) == 16
    assert assign_bins([0.0, 1.0], edges).tolist() == [0, 14]
    # Even with duplicate edges at 1.0 (saturated equal-mass), 1.0 goes to the last bin.
    assert assign_bins([1.0, 0.999], [0.0, 0.5, 1.0, 1.0]).tolist() == [2, 1]


def test_bins_are_left_open_right_closed():
    edges = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    assert assign_bins([0.25, 0.2500001, 0.5, 0.75, 0.76], edges).tolist() == [0, 1, 1, 2, 3]


def test_equal_mass_equal_counts_when_divisible():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.2, 1.0, size=60)
    bins = reliability_bins(conf, rng.random(60) < 0.5, n_bins=6, scheme="equal_mass")
    assert [b["count"] for b in bins] == [10] * 6
    assert bins[0]["lo"] == 0.0 and bins[-1]["hi"] == 1.0
    # Not divisible: floor(i*N/B) boundaries give counts 3, 3, 4.
    conf10 = rng.uniform(size=10)
    assert [b["count"] for b in reliability_bins(conf10, np.ones(10), 3, "equal_mass")] == [3, 3, 4]


def test_equal_mass_fewer_samples_than_bins():
    edges = bin_edges([0.3, 0.6], 5, "equal_mass")
    counts = np.bincount(assign_bins([0.3, 0.6], edges), minlength=5)
    assert counts.sum() == 2 and len(edges) == 6 and np.all(np.diff(edges) >= 0)


# ---------------------------------------------------------------- ECE / MCE


def test_ece_torchmetrics_3510_case():
    # Both confidences fall in [0.9333, 1]: acc 0.5, mean conf 0.975 -> 0.475 (torchmetrics gives 0.525).
    assert expected_calibration_error([0.95, 1.0], [True, False]) == pytest.approx(0.475, abs=1e-12)
    assert maximum_calibration_error([0.95, 1.0], [True, False]) == pytest.approx(0.475, abs=1e-12)


# Five equal-width bins [0,.2],(.2,.4],(.4,.6],(.6,.8],(.8,1]:
#   bin 0: {0.1} acc 0, conf 0.1 -> gap 0.1
#   bin 1: {0.3, 0.35} acc 1/2, conf 0.325 -> gap 0.175
#   bin 4: {0.9, 0.95, 1.0} acc 2/3, conf 0.95 -> gap 0.28333
# ECE = (1*0.1 + 2*0.175 + 3*0.28333) / 6 = 1.3 / 6; MCE = 0.28333.
HAND_CONF = [0.1, 0.3, 0.35, 0.9, 0.95, 1.0]
HAND_CORRECT = [0, 1, 0, 1, 1, 0]


def test_ece_hand_case_several_bins():
    assert expected_calibration_error(HAND_CONF, HAND_CORRECT, n_bins=5) == pytest.approx(1.3 / 6, abs=1e-12)
    bins = reliability_bins(HAND_CONF, HAND_CORRECT, n_bins=5)
    assert [b["count"] for b in bins] == [1, 2, 0, 0, 3]
    assert bins[2]["count"] == 0 and (bins[2]["accuracy"], bins[2]["confidence"], bins[2]["gap"]) == (None,) * 3
    assert bins[2]["lo"] == pytest.approx(0.4) and bins[2]["hi"] == pytest.approx(0.6)
    assert bins[1]["accuracy"] == pytest.approx(0.5) and bins[1]["confidence"] == pytest.approx(0.325)
    assert bins[4]["gap"] == pytest.approx(0.95 - 2 / 3)


def test_mce_hand_case_and_min_count():
    mce = 0.95 - 2 / 3
    assert maximum_calibration_error(HAND_CONF, HAND_CORRECT, n_bins=5) == pytest.approx(mce)
    assert maximum_calibration_error(HAND_CONF, HAND_CORRECT, n_bins=5, min_count=3) == pytest.approx(mce)
    # A lone, badly calibrated sample dominates MCE until min_count excludes it:
    #   bin 0 {0.05} right -> gap 0.95; bin 1 {0.3, 0.35} one right -> gap 0.175.
    assert maximum_calibration_error([0.05, 0.3, 0.35], [1, 1, 0], n_bins=5, min_count=1) == pytest.approx(0.95)
    assert maximum_calibration_error([0.05, 0.3, 0.35], [1, 1, 0], n_bins=5, min_count=2) == pytest.approx(0.175)
    assert maximum_calibration_error(HAND_CONF, HAND_CORRECT, n_bins=5, min_count=4) is None


def test_perfectly_calibrated_bins_give_zero():
    # 10 at 0.8 with 8 right, 4 at 0.25 with 1 right: every bin's accuracy equals its confidence.
    conf = [0.8] * 10 + [0.25] * 4
    correct = [1] * 8 + [0] * 2 + [1] + [0] * 3
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(conf, correct, scheme="equal_mass", n_bins=2) == pytest.approx(0.0, abs=1e-12)
    assert maximum_calibration_error(conf, correct) == pytest.approx(0.0, abs=1e-12)


def test_ece_independent_of_input_order():
    rng = np.random.default_rng(5)
    conf, correct = rng.uniform(size=200), rng.random(200) < 0.6
    perm = rng.permutation(200)
    for scheme in ("equal_width", "equal_mass"):
        assert expected_calibration_error(conf, correct, scheme=scheme) == pytest.approx(
            expected_calibration_error(conf[perm], correct[perm], scheme=scheme), abs=1e-12
        )


def test_classwise_ece_hand_case():
    # K=3, two bins [0,.5],(.5,1]:
    #   class 0: p=[.6,.5,.2,.1], y=[1,0,0,0]: bin0 {.5,.2,.1} freq 0 vs mean .2667 (x3 = .8); bin1 {.6} 1 vs .6 (.4)
    #            -> (.8 + .4) / 4 = .30
    #   class 1: p=[.3,.2,.2,.7], y=[0,0,0,1]: bin0 sum gap .7; bin1 {.7} gap .3 -> 1.0 / 4 = .25
    #   class 2: p=[.1,.3,.6,.2], y=[0,1,1,0]: bin0 {.1,.3,.2} hits 1 vs sum .6 (.4); bin1 {.6} gap .4 -> .20
    # mean = .25
    probs = [[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6], [0.1, 0.7, 0.2]]
    assert classwise_ece(probs, [0, 2, 2, 1], n_bins=2) == pytest.approx(0.25, abs=1e-12)


# ---------------------------------------------------------------- AURC


def test_aurc_hand_case():
    # Sorted by confidence: risks at coverage 1/3, 2/3, 3/3 are 0, 1/2, 1/3.
    assert aurc([0.9, 0.8, 0.7], [1, 0, 1]) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3, abs=1e-12)
    assert aurc([0.7, 0.9, 0.8], [1, 1, 0]) == pytest.approx(0.2777777777777778, abs=1e-12)


def test_aurc_ties_average_over_orderings():
    # Two tied samples, one wrong: orderings give mean risks 0.25 and 0.75 -> 0.5 either way round.
    assert aurc([0.9, 0.9], [1, 0]) == pytest.approx(0.5)
    assert aurc([0.9, 0.9], [0, 1]) == pytest.approx(0.5)
    # Brute force over all orderings of the tied group {0.8 x3}.
    from itertools import permutations

    conf = np.array([0.95, 0.8, 0.8, 0.8, 0.5])
    correct = np.array([1, 0, 1, 1, 0], dtype=bool)
    values = []
    for perm in permutations([1, 2, 3]):
        err = (~correct[[0, *perm, 4]]).astype(float)
        values.append(np.mean(np.cumsum(err) / np.arange(1, 6)))
    assert aurc(conf, correct) == pytest.approx(np.mean(values), abs=1e-12)


def test_aurc_shuffle_invariant():
    rng = np.random.default_rng(9)
    conf = rng.choice([0.3, 0.5, 0.7, 0.9, 1.0], size=300)  # heavy ties
    correct = rng.random(300) < conf
    ref = aurc(conf, correct)
    for _ in range(5):
        p = rng.permutation(300)
        assert aurc(conf[p], correct[p]) == pytest.approx(ref, abs=1e-12)
    assert aurc(conf, np.ones(300, bool)) == 0.0 and aurc(conf, np.zeros(300, bool)) == 1.0


# ---------------------------------------------------------------- summary, softmax


def test_calibration_summary_shape_and_consistency():
    probs, labels = _dirichlet(120, 4, seed=11)
    s = calibration_summary(probs, labels, n_bins=10, min_count_mce=2)
    json.dumps(s)  # JSON-ready: plain Python types only
    conf, correct = probs.max(1), probs.argmax(1) == labels
    assert s["n"] == 120
    assert s["ece"] == {"value": expected_calibration_error(conf, correct, 10), "binning": "equal_width", "n_bins": 10}
    assert s["ece_equal_mass"]["binning"] == "equal_mass"
    assert s["ece_equal_mass"]["value"] == pytest.approx(expected_calibration_error(conf, correct, 10, "equal_mass"))
    assert s["mce"]["min_count"] == 2 and s["mce"]["value"] >= s["ece"]["value"]
    assert s["classwise_ece"]["value"] == pytest.approx(classwise_ece(probs, labels, 10))
    assert s["nll"]["value"] == pytest.approx(negative_log_likelihood(probs, labels))
    assert s["brier"]["value"] == pytest.approx(brier_score(probs, labels))
    assert s["aurc"]["value"] == pytest.approx(aurc(conf, correct))
    assert len(s["reliability"]["bins"]) == 10 and sum(b["count"] for b in s["reliability"]["bins"]) == 120


def test_calibration_summary_empty():
    s = calibration_summary(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert s["n"] == 0
    assert all(
        s[key]["value"] is None for key in ("ece", "ece_equal_mass", "mce", "classwise_ece", "nll", "brier", "aurc")
    )
    assert all(b["count"] == 0 for b in s["reliability"]["bins"])


def test_softmax64_stable_and_float64():
    p = softmax64(np.array([[1000.0, 1000.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-15)


def test_argmax_tie_uses_lowest_index():
    # Tied top probabilities: prediction is class 0, so label 0 counts as correct (ECE |1 - 0.5| = 0.5).
    s = calibration_summary([[0.5, 0.5]], [0], n_bins=2)
    assert s["ece"]["value"] == pytest.approx(0.5)
    assert s["aurc"]["value"] == 0.0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: brier_score([[0.5, 0.4]], [0]), "sum to 1"),
        (lambda: negative_log_likelihood([[np.nan, 1.0]], [0]), "NaN"),
        (lambda: classwise_ece([[0.5, 0.5]], [2]), "labels"),
        (lambda: classwise_ece([[0.5, 0.5]], [-1]), "labels"),
        (lambda: brier_score([[0.5, 0.5], [0.5, 0.5]], [0]), "length"),
        (lambda: expected_calibration_error([0.5, 0.6], [1]), "length"),
        (lambda: expected_calibration_error([0.5, np.inf], [1, 0]), "NaN or infinite"),
        (lambda: expected_calibration_error([0.5, 1.5], [1, 0]), r"\[0, 1\]"),
        (lambda: expected_calibration_error([0.5], [1], scheme="quantile"), "binning scheme"),
        (lambda: expected_calibration_error([0.5], [1], n_bins=0), "n_bins"),
        (lambda: expected_calibration_error([], []), "at least one"),
        (lambda: calibration_summary([[2.0, -1.0]], [0]), r"\[0, 1\]"),
        (lambda: calibration_summary([0.5, 0.5], [0]), "2-D"),
        (lambda: calibration_summary([[0.5, 0.5]], [0.5]), "integers"),
        (lambda: softmax64([[np.nan, 1.0]]), "NaN"),
    ],
)
def test_bad_input_raises_usage_error(call, match):
    with pytest.raises(UsageError, match=match):
        call()
