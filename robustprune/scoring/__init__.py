"""Scoring: one model under one battery -> a typed, verified ScoreResult (sanity checks, the attacks that some
models call for, the per-sample table and every aggregate derived from it)."""

from robustprune.scoring.per_sample import PerSampleTable
from robustprune.scoring.result import Finding, ScoreResult
from robustprune.scoring.scorer import RANDOMIZED_PASSES, score

__all__ = ["RANDOMIZED_PASSES", "Finding", "PerSampleTable", "ScoreResult", "score"]
