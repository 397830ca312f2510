"""Metrics: accuracy with confidence intervals, paired tests, statistics over seeds, calibration (float64), and
neuron activity (metrics.activity, which needs torch and is imported on its own)."""

from robustprune.metrics.accuracy import accuracy_with_ci, clopper_pearson_interval, wilson_interval
from robustprune.metrics.calibration import (
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
from robustprune.metrics.paired import mcnemar_test, one_sided_drop_pvalue
from robustprune.metrics.seeds import mean_band

__all__ = [
    "accuracy_with_ci",
    "assign_bins",
    "aurc",
    "bin_edges",
    "brier_score",
    "calibration_summary",
    "classwise_ece",
    "clopper_pearson_interval",
    "expected_calibration_error",
    "maximum_calibration_error",
    "mcnemar_test",
    "mean_band",
    "negative_log_likelihood",
    "one_sided_drop_pvalue",
    "reliability_bins",
    "softmax64",
    "wilson_interval",
]
