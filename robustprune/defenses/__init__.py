"""Defenses that produce models, and the training loop they share.

Importing this package registers every defense: one explicit import per defense module (its `register_defense`).
"""

from robustprune.defenses import (
    fgsm_rs,  # noqa: F401
    pgd_at,  # noqa: F401
    standard,  # noqa: F401
    trades,  # noqa: F401
)

from robustprune.defenses import dam, deadwooding, dio, hydra  # noqa: F401  isort: skip  (need the loss defenses)
