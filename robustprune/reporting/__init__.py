"""The sweep report: robustness, calibration and cost vs sparsity per recipe, paired comparisons, figures.

Reads stored results only (robustprune.results.store); never trains, scores or attacks.
"""
