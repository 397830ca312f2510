"""`standard`: plain cross-entropy training, the dense (or pruned-only) baseline every defense is compared with.

No adversarial examples; with a [pruning] table it is the classic magnitude-pruning baseline (Han et al., arXiv
1506.02626; Zhu & Gupta, arXiv 1710.01878) and, with pruning.reinit, the scratch control (arXiv 1810.05270).
"""

from __future__ import annotations

from robustprune.data import Dataset
from robustprune.defenses.base import register_defense
from robustprune.defenses.common import LossDefense
from robustprune.defenses.train_loop import Loss, cross_entropy


@register_defense("standard")
class Standard(LossDefense):
    defaults = {}

    def make_loss(self, train: Dataset) -> Loss:
        return cross_entropy
