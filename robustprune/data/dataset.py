"""The Dataset type, its validation, and the conversions every format ends in.

Every loader ends in `validate_examples`, so a model is never scored on inputs outside the attack box [0,1]
(normalization belongs inside the model) or on labels the model cannot predict.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustprune.errors import UsageError

SPLITS = ("train", "test")
MAX_DATA_BYTES = 64 * 2**30  # a data file beyond this is not a dataset this tool can hold in memory
# What a file may declare before anything is allocated: the decoded bytes of one array (a header claiming 10^12
# images, a gzip that inflates 37 MB to 8 GB, IDX dimensions whose product overflows are refused first), and the
# classes its labels may name (a label of 10^9 would ask for gigabytes of per-class arrays).
MAX_DECODED_BYTES = 16 * 2**30
MAX_CLASSES = 100_000


def check_declared(nbytes: int, where: str, what: str) -> None:
    """Refuse an array whose declared size is beyond MAX_DECODED_BYTES, before it is read."""
    if nbytes > MAX_DECODED_BYTES:
        raise UsageError(
            f"{where}: {what} declares {nbytes:,} bytes, beyond the {MAX_DECODED_BYTES // 2**30} GiB robustprune "
            "decodes; the header is damaged, or score a subset of the data"
        )


def one_line(text: object) -> str:
    # UsageError messages are one line by contract; exception texts from numpy/pickle sometimes are not.
    return " ".join(str(text).split())


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == is elementwise, not a bool
class Dataset:
    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    source: str
    split: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.x.shape
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        # The default repr would print every pixel.
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )

    def subset(self, n: int | None) -> Dataset:
        """The first `n` examples (deterministic, so paired comparisons see the same ones); None means all."""
        if n is None:
            return self
        total = len(self)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise UsageError(f"--n must be a whole number, got {n!r}; pass --n between 1 and {total}")
        n = int(n)
        if n > total:
            raise UsageError(
                f"--n {n} is beyond the dataset ({self.name} {self.split} split has {total} examples); "
                f"pass --n {total} or fewer"
            )
        if n < 1:
            raise UsageError(f"--n {n} is too small; pass --n between 1 and {total}")
        if n == total:
            return self
        return Dataset(self.name, self.x[:n], self.y[:n], self.num_classes, self.source, self.split)

    def fingerprint(self) -> str:
        """SHA-256 over the raw bytes of x then y: equal fingerprints prove two runs scored the same examples."""
        digest = hashlib.sha256()
        digest.update(self.x.detach().cpu().contiguous().numpy().data)
        digest.update(self.y.detach().cpu().contiguous().numpy().data)
        return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Validation


def validate_examples(x: torch.Tensor, y: torch.Tensor, num_classes: int, where: str) -> None:
    """Raise a one-line UsageError naming `where` unless x is finite float NCHW in [0,1] and y fits num_classes."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise UsageError(f"{where}: x and y must be torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point():
        raise UsageError(f"{where}: x has dtype {x.dtype}; convert it to float32 with values in [0,1]")
    if x.dim() != 4:
        raise UsageError(f"{where}: x has shape {tuple(x.shape)} (rank {x.dim()}); inputs must be rank 4 (N, C, H, W)")
    if x.shape[0] == 0:
        raise UsageError(f"{where}: there are no examples (x has shape {tuple(x.shape)}); provide at least one")
    if x[0].numel() == 0:
        raise UsageError(f"{where}: the images are empty (x has shape {tuple(x.shape)}); every image needs pixels")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise UsageError(f"{where}: x has {bad} NaN or infinite values; clean or drop those examples")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise UsageError(
            f"{where}: x has values outside [0,1] (min {lo:g}, max {hi:g}); "
            "scale inputs to [0,1] and put normalization inside the model"
        )
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise UsageError(f"{where}: y has dtype {y.dtype}; labels must be integers (class indices)")
    if y.dim() != 1:
        raise UsageError(f"{where}: y has shape {tuple(y.shape)}; labels must be rank 1 (N,) class indices")
    if y.shape[0] != x.shape[0]:
        raise UsageError(
            f"{where}: x has {x.shape[0]} examples but y has {y.shape[0]} labels; give one label per example"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise UsageError(f"{where}: num_classes must be a positive integer, got {num_classes!r}")
    if num_classes > MAX_CLASSES:
        raise UsageError(
            f"{where}: {num_classes:,} classes (the labels or num_classes say so) is beyond the {MAX_CLASSES:,} "
            "robustprune handles; check the labels"
        )
    ymin, ymax = int(y.min()), int(y.max())
    if ymin < 0 or ymax >= num_classes:
        raise UsageError(
            f"{where}: labels must be in [0, {num_classes}) but range from {ymin} to {ymax}; "
            f"fix the labels or set num_classes to at least {ymax + 1}"
        )


def as_dataset(
    x: Any, y: Any, num_classes: int | None = None, name: str = "tensors", *, split: str = "test"
) -> Dataset:
    """Wrap user tensors or numpy arrays (x rank 4, floats in [0,1]) as a validated Dataset."""
    x_t = _to_tensor(x, name, "x")
    y_t = _to_tensor(y, name, "y")
    if split not in SPLITS:
        raise UsageError(f"{name}: split {split!r} is not one of {', '.join(SPLITS)}")
    if num_classes is None:
        # Validate with a placeholder so bad labels get the validation message, not a crash in max().
        if y_t.dim() == 1 and y_t.numel() and not (y_t.is_floating_point() or y_t.dtype == torch.bool):
            num_classes = int(y_t.max()) + 1
        else:
            num_classes = 1
    validate_examples(x_t, y_t, num_classes, name)
    return Dataset(
        name=name,
        x=x_t.detach().cpu().to(torch.float32).contiguous(),
        y=y_t.detach().cpu().to(torch.int64).contiguous(),
        num_classes=int(num_classes),
        source="in-memory tensors",
        split=split,
    )


def _to_tensor(value: Any, where: str, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    arr = np.asarray(value)
    if arr.dtype == object:
        raise UsageError(f"{where}: {what} is an object array; pass a numeric numpy array or torch tensor")
    return torch.from_numpy(np.ascontiguousarray(arr))


def finish(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, source: str, split: str) -> Dataset:
    """numpy arrays (x already float in [0,1] or about to be checked) -> validated Dataset."""
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y_t = torch.from_numpy(np.ascontiguousarray(y))
    if np.issubdtype(y.dtype, np.integer):
        y_t = y_t.to(torch.int64)
    validate_examples(x_t, y_t, num_classes, name)
    return Dataset(name=name, x=x_t, y=y_t, num_classes=int(num_classes), source=source, split=split)


def pixels_to_unit(x: np.ndarray, where: str, pixel_max: float | None = None) -> np.ndarray:
    """Pixels as float32 in [0, 1]. Floats pass through, widened exactly (float16 too; the range is checked later).
    Integer pixels are ambiguous (0..255? 0..1? 0..65535?) and would make every eps mean something else, so they
    are read only when the file says how: `pixel_max` (e.g. 255) divides them; else they are refused with the fix."""
    if np.issubdtype(x.dtype, np.floating):
        if pixel_max is not None:
            raise UsageError(f"{where}: pixel_max is for integer pixels, but x holds {x.dtype}; drop pixel_max")
        return x.astype(np.float32, copy=False)
    if np.issubdtype(x.dtype, np.integer) and not np.issubdtype(x.dtype, np.bool_):
        if pixel_max is None:
            raise UsageError(
                f"{where}: x holds {x.dtype} pixels (0..{int(x.max()) if x.size else 0}), so eps would not be in "
                "[0, 1] pixel units; save x as float32 divided by 255 (or by your maximum), or store pixel_max=255 "
                "in the file to have robustprune divide"
            )
        if not pixel_max > 0:
            raise UsageError(f"{where}: pixel_max must be positive, got {pixel_max!r}")
        return x.astype(np.float32) / np.float32(pixel_max)
    raise UsageError(f"{where}: x has dtype {x.dtype}; store pixels as float32 in [0, 1]")
