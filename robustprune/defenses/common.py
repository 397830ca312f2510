"""What the loss-based defenses share: a Defense whose whole method is a training loss (plus optional callbacks),
trained by the shared loop and pruned by the recipe's pruning plan (pruning_driver.py).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

from torch import nn

from robustprune.data import Dataset
from robustprune.defenses.base import Artifact, Defense
from robustprune.defenses.train_loop import Callback, Loss
from robustprune.errors import UsageError


class LossDefense(Defense):
    """Subclasses implement `make_loss`; `make_callbacks` adds per-epoch checks (e.g. FGSM-RS's guard)."""

    @abstractmethod
    def make_loss(self, train: Dataset) -> Loss:
        """The per-batch training loss `(model, x, y, ctx) -> scalar`; the loop puts the model in train mode."""

    def make_callbacks(self, train: Dataset, val: Dataset, seed: int) -> Sequence[Callback]:
        return ()

    def run(
        self,
        model: nn.Module,
        train: Dataset,
        val: Dataset,
        *,
        sparsity: float,
        parent: nn.Module | None,
        seed: int,
        progress: bool = False,
    ) -> Artifact:
        from robustprune.defenses.pruning_driver import train_with_pruning

        artifact = train_with_pruning(
            model,
            train,
            val,
            self.recipe,
            loss=self.make_loss(train),
            callbacks=lambda: self.make_callbacks(train, val, seed),
            sparsity=sparsity,
            parent=parent,
            seed=seed,
            progress=progress,
        )
        artifact.extra["settings"] = dict(self.settings)
        return artifact

    # -- shared validation helpers ------------------------------------------------------------------------------
    def _check_eps(self, key: str = "eps") -> None:
        eps = self.settings[key]
        if not 0 < float(eps) <= 1:  # inputs live in [0,1], so eps is in pixel units
            raise UsageError(f"recipe {self.recipe.name!r} [settings] {key} must be in (0, 1], got {eps}")

    def _check_positive(self, *keys: str) -> None:
        for key in keys:
            if not float(self.settings[key]) > 0:
                raise UsageError(f"recipe {self.recipe.name!r} [settings] {key} must be > 0, got {self.settings[key]}")
