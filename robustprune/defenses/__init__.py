"""Defenses that produce models, and the training loop they share."""
