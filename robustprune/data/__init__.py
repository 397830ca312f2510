"""Datasets as float32 NCHW tensors in [0,1]: the embedded digits set and local .npz, MNIST IDX and CIFAR files.

One module per format (a registered `DataFormat`); nothing here downloads, and nothing here executes code from a
data file: .npz is read without pickle and CIFAR pickles go through an allow-list unpickler.
"""

from robustprune.data.dataset import SPLITS, Dataset, as_dataset, validate_examples
from robustprune.data.formats import DATA_FORMATS, DataFormat, load_dataset, register_format

# Imported for their registrations, in dispatch order (the CIFAR fallback goes last whatever the order).
from robustprune.data import digits, npz, idx, cifar  # noqa: F401  isort: skip

__all__ = [
    "DATA_FORMATS",
    "SPLITS",
    "DataFormat",
    "Dataset",
    "as_dataset",
    "load_dataset",
    "register_format",
    "validate_examples",
]
