"""Attack adapters (one module each) and the battery engine."""

from robustprune.attacks import (  # noqa: F401  (registration)
    adaptive,
    apgd,
    autoattack,
    bpda,
    custom,
    fab,
    fast_apgd,
    fgsm,
    odi_apgd,
    pgd,
    probes,
    replay,
    rescaled,
    square,
    square_sentinel,
    transfer,
)
from robustprune.attacks.base import ATTACKS, Attack
from robustprune.attacks.battery import BatteryOutcome, Predictions, check_battery, load_battery, predict, run_battery

__all__ = [
    "ATTACKS",
    "Attack",
    "BatteryOutcome",
    "Predictions",
    "check_battery",
    "load_battery",
    "predict",
    "run_battery",
]
