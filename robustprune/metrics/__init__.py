"""Metrics: accuracy with confidence intervals and paired tests, and calibration (float64, numpy only)."""

from robustprune.metrics.accuracy import (
    accuracy_with_ci,
    clopper_pearson_interval,
    mcnemar_test,
    one_sided_drop_pvalue,
    wilson_interval,
)
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
    "negative_log_likelihood",
    "one_sided_drop_pvalue",
    "reliability_bins",
    "softmax64",
    "wilson_interval",
]
