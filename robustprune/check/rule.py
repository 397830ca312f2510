"""The regression rule's default limits, shared by `robustprune check`, `robustprune.check.compare` and the pytest
plugin. A module of its own so the CLI parser and the plugin can read them without importing numpy."""

TOLERANCE = 1.0  # percentage points an accuracy may drop before the paired test is consulted
ALPHA = 0.05  # significance of the one-sided paired test
CALIBRATION_TOLERANCE = 0.02  # largest allowed rise of ECE
NLL_TOLERANCE = 0.1  # largest allowed rise of NLL
