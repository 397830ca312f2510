"""robustprune: accuracy, adversarial robustness, calibration and sparsity of pruned networks."""

__version__ = "0.1.0"
