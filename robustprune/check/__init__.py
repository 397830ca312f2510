"""Regression testing: compare results with a stored baseline and fail only when robustness dropped by more than
chance explains (`robustprune check`, and the pytest plugin in `robustprune.check.pytest_plugin`)."""
