"""A validation split for data that has none: a seeded, stratified share of the training examples held out.

Training a model and judging it on the very examples it fit (an .npz holding only x and y serves the same arrays
as "train" and "test") reports memorisation as accuracy; `train` holds out this split instead and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustprune.data.dataset import Dataset
from robustprune.errors import UsageError

HOLDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class Holdout:
    """What was held out, for the manifest."""

    fraction: float
    seed: int
    n_train: int
    n_val: int

    def to_dict(self) -> dict[str, object]:
        return {
            "held_out": True,
            "fraction": self.fraction,
            "seed": self.seed,
            "train_examples": self.n_train,
            "val_examples": self.n_val,
            "why": "the dataset has no separate validation/test split: a seeded stratified share of it is held out",
        }


def stratified_holdout(
    data: Dataset, fraction: float = HOLDOUT_FRACTION, seed: int = 0
) -> tuple[Dataset, Dataset, Holdout]:
    """(train, val, record): per class, round(fraction x its examples) drawn with `seed` (at least one from every
    class that has two or more examples), the rest kept for training; each part keeps the original order."""
    if not 0 < fraction < 1:
        raise UsageError(f"the held-out fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    labels = data.y.detach().cpu()
    held = torch.zeros(len(labels), dtype=torch.bool)
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        k = max(1, round(fraction * len(idx))) if len(idx) >= 2 else 0
        held[idx[torch.randperm(len(idx), generator=generator)[:k]]] = True
    if held.all() or not held.any():
        raise UsageError(f"{data.name} is too small to hold out a validation split; give it a separate test split")
    keep = (~held).nonzero().flatten()
    val = held.nonzero().flatten()
    train = Dataset(data.name, data.x[keep], data.y[keep], data.num_classes, data.source, "train")
    held_out = Dataset(data.name, data.x[val], data.y[val], data.num_classes, data.source, "test")
    return train, held_out, Holdout(fraction, seed, len(keep), len(val))
