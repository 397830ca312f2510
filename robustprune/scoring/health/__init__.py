"""Health checks of an evaluation (evaluation.md S1-S21, and S22): is the number the battery produced true?

`model` checks look at the model before any attack; `outcome` checks judge what the battery did, with probe
attacks run on its survivors; `bounds` checks (S24-S26) judge the attacks against certified and exact bounds. Each check is one registered class (HEALTH_CHECKS); scoring/escalation.py acts on
their findings and scoring/verdict.py turns them into one verdict.
"""

from robustprune.scoring.health import bounds_checks, model_checks, outcome_checks  # noqa: F401  (registration)
from robustprune.scoring.health.base import HEALTH_CHECKS, Check, HealthContext, ordered_checks, register_check
from robustprune.scoring.health.engine import check_model, check_outcome, run_outcome_check
from robustprune.scoring.health.records import STATUSES, VERDICTS, CheckResult, EscalationRecord, HealthReport

__all__ = [
    "HEALTH_CHECKS",
    "STATUSES",
    "VERDICTS",
    "Check",
    "CheckResult",
    "EscalationRecord",
    "HealthContext",
    "HealthReport",
    "check_model",
    "check_outcome",
    "ordered_checks",
    "register_check",
    "run_outcome_check",
]
