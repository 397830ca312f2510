"""Scoring: one model under one battery -> a typed, verified ScoreResult: the health checks (health/), the attacks
that some models call for (additions.py) and the escalations (escalation.py), the per-sample table and every
aggregate derived from it, and the verdict (verdict.py)."""

from robustprune.scoring.eps_curve import EpsCurve, min_norm_curve
from robustprune.scoring.escalation import EscalationBudget
from robustprune.scoring.per_sample import PerSampleTable
from robustprune.scoring.result import Finding, ScoreResult
from robustprune.scoring.scorer import RANDOMIZED_PASSES, score

__all__ = [
    "RANDOMIZED_PASSES",
    "EpsCurve",
    "EscalationBudget",
    "Finding",
    "PerSampleTable",
    "ScoreResult",
    "min_norm_curve",
    "score",
]
