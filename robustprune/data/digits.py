"""The embedded default: scikit-learn's 8x8 handwritten digits with a fixed stratified split (1437 / 360)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from robustprune.data.dataset import Dataset, finish
from robustprune.data.formats import DataFormat, register_format

DIGITS_SOURCE = "sklearn.datasets.load_digits"


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    arrays = (x_tr, y_tr, x_te, y_te)
    for arr in arrays:
        arr.flags.writeable = False  # cached and shared between calls: nobody may edit it in place
    return arrays


def _load_digits(split: str) -> Dataset:
    x_tr, y_tr, x_te, y_te = _digits_arrays()
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    # Copy so a caller editing its tensors cannot corrupt the cache.
    return finish("digits", np.array(x), np.array(y), 10, DIGITS_SOURCE, split)


@register_format("digits")
class Digits(DataFormat):
    """Named, not a file: `--dataset digits`."""

    names = ("digits",)
    description = "scikit-learn's 8x8 digits (embedded; 1437 train / 360 test, stratified, fixed)"

    def load(self, path: Path, split: str) -> Dataset:
        return _load_digits(split)
