"""Datasets as float32 NCHW tensors in [0,1]: the embedded digits set and local .npz, MNIST IDX and CIFAR files.

Every loader ends in `validate_examples`, so a model is never scored on inputs outside the attack box [0,1]
(normalization belongs inside the model) or on labels the model cannot predict. Nothing here downloads, and
nothing here executes code from a data file: .npz is read without pickle and CIFAR pickles go through an
allow-list unpickler.
"""

from __future__ import annotations

import _compat_pickle  # the stdlib's table of Python 2 -> 3 pickle names
import functools
import gzip
import hashlib
import io
import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustprune.errors import UsageError
from robustprune.validation import check_input_file, escape, read_input_bytes

__all__ = ["SPLITS", "Dataset", "as_dataset", "load_dataset", "validate_examples"]

SPLITS = ("train", "test")
MAX_DATA_BYTES = 64 * 2**30  # a data file beyond this is not a dataset this tool can hold in memory
DIGITS_SOURCE = "sklearn.datasets.load_digits"
_NOT_FOUND = (
    "dataset {spec!r} not found: use 'digits' or a path to a .npz file, an MNIST IDX file/directory, "
    "or a CIFAR batch directory"
)


def _one_line(text: str) -> str:
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


def _finish(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, source: str, split: str) -> Dataset:
    """numpy arrays (x already float in [0,1] or about to be checked) -> validated Dataset."""
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y_t = torch.from_numpy(np.ascontiguousarray(y))
    if np.issubdtype(y.dtype, np.integer):
        y_t = y_t.to(torch.int64)
    validate_examples(x_t, y_t, num_classes, name)
    return Dataset(name=name, x=x_t, y=y_t, num_classes=int(num_classes), source=source, split=split)


def _pixels_to_unit(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 -> /255; floats pass through (range checked later); anything else is ambiguous and refused."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise UsageError(f"{where}: x has dtype {x.dtype}; store pixels as uint8 (0..255) or float in [0,1]")


# --------------------------------------------------------------------------------------------------------------
# Entry point


def load_dataset(spec: str | os.PathLike[str], split: str = "test") -> Dataset:
    """'digits' (embedded) or a path to a .npz file, MNIST IDX file/directory or CIFAR batch file/directory."""
    if split not in SPLITS:
        raise UsageError(f"split {split!r} is not known; use one of: {', '.join(SPLITS)}")
    if not isinstance(spec, str | os.PathLike):
        raise UsageError(f"--dataset must be 'digits' or a path, got {escape(repr(spec))}")
    spec_str = os.fspath(spec)
    if spec_str == "digits":
        return _load_digits(split)
    if not spec_str:
        raise UsageError(_NOT_FOUND.format(spec=spec_str))
    try:
        path = check_input_file(spec_str, "--dataset", max_bytes=MAX_DATA_BYTES, allow_dir=True)
    except UsageError as err:
        if "does not exist" in str(err):
            raise UsageError(_NOT_FOUND.format(spec=escape(spec_str))) from None
        raise
    path = path.resolve()
    if path.is_dir():
        return _load_directory(path, split)
    if path.suffix.lower() == ".npz":
        return _load_npz(path, split)
    if _IDX_IMAGES.search(path.name):
        return _load_idx_file(path, split)
    if _IDX_LABELS.search(path.name):
        raise UsageError(f"{path.name} is an MNIST labels file; pass the matching *-images-idx3-ubyte file instead")
    if path.suffix.lower() == ".npy":
        raise UsageError(f"{path.name}: a .npy file holds one array; save x and y together with numpy.savez")
    return _load_cifar_file(path, split)


def _load_directory(path: Path, split: str) -> Dataset:
    names = {p.name for p in path.iterdir()}
    if any(n.startswith(("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")) for n in names):
        return _load_idx_dir(path, split)
    if "test_batch" in names or any(n.startswith("data_batch_") for n in names):
        return _load_cifar10_dir(path, split)
    if "train" in names and "test" in names:
        return _load_cifar100_dir(path, split)
    raise UsageError(
        f"directory {path} holds no known dataset: expected MNIST IDX files (train-/t10k-images-idx3-ubyte), "
        "CIFAR-10 batches (data_batch_1..5, test_batch) or CIFAR-100 files (train, test)"
    )


# --------------------------------------------------------------------------------------------------------------
# digits (scikit-learn, bundled)


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
    return _finish("digits", np.array(x), np.array(y), 10, DIGITS_SOURCE, split)


# --------------------------------------------------------------------------------------------------------------
# .npz


def _load_npz(path: Path, split: str) -> Dataset:
    where = path.name
    check_input_file(path, "dataset file", max_bytes=MAX_DATA_BYTES)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if "pickle" in str(exc):  # numpy's own text suggests loading it unsafely, which we never do
            raise UsageError(f"{where} is a pickle, not an .npz archive; save x and y with numpy.savez") from exc
        raise UsageError(f"{where} is not a readable .npz file ({_one_line(exc)}); save it with numpy.savez") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise UsageError(f"{where} holds a single array, not x and y; save both with numpy.savez(path, x=..., y=...)")
    with npz:
        keys = set(npz.files)
        if f"x_{split}" in keys and f"y_{split}" in keys:
            x_key, y_key = f"x_{split}", f"y_{split}"
        elif "x" in keys and "y" in keys:
            x_key, y_key = "x", "y"
        else:
            found = ", ".join(sorted(keys)) or "none"
            raise UsageError(
                f"{where} has no {split} split (keys: {found}); store arrays 'x' and 'y' "
                f"(or 'x_{split}' and 'y_{split}')"
            )
        x = _npz_array(npz, x_key, where)
        y = _npz_array(npz, y_key, where)
        num_classes_arr = _npz_array(npz, "num_classes", where) if "num_classes" in keys else None

    x = _pixels_to_unit(_to_nchw(x, where), where)
    if not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"{where}: {y_key} has dtype {y.dtype}; labels must be integers (class indices)")
    if num_classes_arr is not None:
        if num_classes_arr.size != 1 or not np.issubdtype(num_classes_arr.dtype, np.integer):
            raise UsageError(f"{where}: num_classes must be a single integer, got {num_classes_arr!r}")
        num_classes = int(num_classes_arr.reshape(()))
    else:
        num_classes = int(y.max()) + 1 if y.ndim == 1 and y.size else 1
    return _finish(path.name, x, y, num_classes, str(path), split)


def _npz_array(npz: Any, key: str, where: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise UsageError(
                f"{where}: array {key!r} holds pickled Python objects, which are not loaded; "
                "save x and y as plain numeric arrays"
            ) from exc
        raise UsageError(f"{where}: array {key!r} cannot be read ({_one_line(exc)})") from exc
    except (OSError, EOFError, zlib.error, KeyError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{where}: array {key!r} cannot be read ({_one_line(exc)}); the file may be corrupt") from exc


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:  # NHW: one channel
        return x[:, None, :, :]
    if x.ndim == 4:
        # NHWC is recognizable when the last axis looks like channels and the second does not.
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            return x.transpose(0, 3, 1, 2)
        return x
    raise UsageError(f"{where}: x has shape {x.shape}; store images as (N,H,W), (N,C,H,W) or (N,H,W,C)")


# --------------------------------------------------------------------------------------------------------------
# MNIST IDX

_IDX_IMAGES = re.compile(r"images[-.]idx3", re.IGNORECASE)
_IDX_LABELS = re.compile(r"labels[-.]idx1", re.IGNORECASE)
_IDX_IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension


def _read_maybe_gz(path: Path) -> bytes:
    raw = read_input_bytes(path, "dataset file", max_bytes=MAX_DATA_BYTES)
    try:
        if path.suffix.lower() == ".gz":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"{path.name} cannot be read ({_one_line(exc)}); re-download or re-extract it") from exc


def _parse_idx(path: Path, magic_expected: int, kind: str) -> np.ndarray:
    data = _read_maybe_gz(path)
    if len(data) < 4:
        raise UsageError(f"{path.name} is truncated ({len(data)} bytes, no IDX header); re-download or re-extract it")
    magic = int.from_bytes(data[:4], "big")
    if magic != magic_expected:
        raise UsageError(
            f"{path.name} is not an MNIST IDX {kind} file (magic 0x{magic:08x}, expected 0x{magic_expected:08x}); "
            f"pass the *-{kind}-idx{magic_expected & 0xFF}-ubyte file"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UsageError(f"{path.name} is truncated inside its IDX header; re-download or re-extract it")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(data) - header
    if found < expected:
        shape = "x".join(map(str, dims))
        raise UsageError(
            f"{path.name} is truncated (header says {shape} = {expected} bytes, found {found}); "
            "re-download or re-extract it"
        )
    if found > expected:
        raise UsageError(f"{path.name} has {found - expected} bytes beyond what its IDX header declares; it is corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_pair(images: Path, labels: Path, split: str, name: str, source: str) -> Dataset:
    x = _parse_idx(images, _IDX_IMAGE_MAGIC, "images")
    y = _parse_idx(labels, _IDX_LABEL_MAGIC, "labels")
    if x.shape[0] != y.shape[0]:
        raise UsageError(
            f"{images.name} has {x.shape[0]} images but {labels.name} has {y.shape[0]} labels; "
            "use the images and labels files of the same split"
        )
    x = x[:, None, :, :].astype(np.float32) / np.float32(255.0)
    return _finish(name, x, y.astype(np.int64), 10, source, split)


def _find_with_optional_gz(directory: Path, base: str) -> Path | None:
    for candidate in (directory / base, directory / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_file(images: Path, split: str) -> Dataset:
    base = images.name[:-3] if images.name.lower().endswith(".gz") else images.name
    label_base = _IDX_IMAGES.sub(lambda m: "labels" + m.group(0)[6] + "idx1", base, count=1)
    labels = _find_with_optional_gz(images.parent, label_base)
    if labels is None:
        raise UsageError(f"{images.name}: labels file {label_base}[.gz] not found beside it; put it in {images.parent}")
    # A single file is one split; its name says which when it follows the MNIST convention.
    if base.lower().startswith("t10k-"):
        split = "test"
    elif base.lower().startswith("train-"):
        split = "train"
    return _load_idx_pair(images, labels, split, images.name, str(images))


def _load_idx_dir(directory: Path, split: str) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    images = _find_with_optional_gz(directory, f"{prefix}-images-idx3-ubyte")
    labels = _find_with_optional_gz(directory, f"{prefix}-labels-idx1-ubyte")
    for found, base in ((images, f"{prefix}-images-idx3-ubyte"), (labels, f"{prefix}-labels-idx1-ubyte")):
        if found is None:
            raise UsageError(f"MNIST directory {directory} lacks {base}[.gz] for the {split} split; add that file")
    assert images is not None and labels is not None
    return _load_idx_pair(images, labels, split, directory.name, str(directory))


# --------------------------------------------------------------------------------------------------------------
# CIFAR python batches (pickles, read through an allow-list)


def _numpy_internal(name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; importing numpy.core there only warns, so prefer the new home.
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    return getattr(multiarray, name, None) or getattr(numeric, name)


def _safe_codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1"); nothing else is needed.
    if isinstance(obj, str) and encoding.lower().replace("_", "-") in ("latin1", "latin-1") and errors == "strict":
        return obj.encode("latin-1")
    raise pickle.UnpicklingError(f"_codecs.encode called with {type(obj).__name__}/{encoding!r}, not a byte string")


def _safe_bytes(*args: Any) -> bytes:
    # Protocol 2 writes b"" as bytes(); refuse bytes(n), which could allocate arbitrary memory.
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    raise pickle.UnpicklingError("bytes() called with arguments a data file does not need")


def _safe_bytearray(*args: Any) -> bytearray:
    return bytearray(_safe_bytes(*args))


def _gate(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `fn` in an object without __dict__ or slots: a BUILD opcode (which setattr()s on whatever object is on
    the stack) could otherwise rewrite attributes such as __defaults__ of numpy's own functions, process-wide."""
    gate_type = type(f"_Gate_{fn.__name__}", (), {"__slots__": (), "__call__": staticmethod(fn)})
    return gate_type()


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    # Types are safe to hand out as they are: numpy's and the builtins' refuse setattr.
    gated: dict[str, Any] = {
        "_reconstruct": _gate(_numpy_internal("_reconstruct")),
        "scalar": _gate(_numpy_internal("scalar")),
        "_frombuffer": _gate(_numpy_internal("_frombuffer")),
    }
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _gate(_safe_codecs_encode),
        ("builtins", "bytes"): _gate(_safe_bytes),
        ("builtins", "bytearray"): _gate(_safe_bytearray),
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
    }
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = gated["_reconstruct"]
        allowed[(f"{module}.multiarray", "scalar")] = gated["scalar"]
        allowed[(f"{module}.numeric", "_frombuffer")] = gated["_frombuffer"]
    return allowed


class _DataOnlyUnpickler(pickle.Unpickler):
    """Rebuilds containers, numbers, strings, bytes and numpy arrays; any other global is refused unresolved."""

    def __init__(self, file: Any, where: str) -> None:
        super().__init__(file, encoding="bytes")  # CIFAR batches were written by Python 2: str -> bytes
        self._where = where
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        # Overriding find_class skips pickle's own Python 2 name fixes (__builtin__ -> builtins, ...); redo them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        target = self._allowed.get((module, name))
        if target is None:
            raise UsageError(
                f"CIFAR batch {self._where} refers to {module}.{name}, which is not allowed in a data file; "
                "this file is not a plain CIFAR batch"
            )
        return target


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """One batch file -> (uint8 images (N,3,32,32), int64 labels, num_classes)."""
    where = path.name
    raw = read_input_bytes(path, "CIFAR batch", max_bytes=MAX_DATA_BYTES)
    try:
        batch = _DataOnlyUnpickler(io.BytesIO(raw), where).load()
    except UsageError:
        raise
    except Exception as exc:  # a malformed pickle can fail in many ways; all of them are the file's fault
        raise UsageError(
            f"CIFAR batch {where} could not be read ({type(exc).__name__}: {_one_line(exc)}); "
            "pass a CIFAR-10/100 python batch (or a .npz / MNIST IDX file)"
        ) from exc
    if not isinstance(batch, dict):
        raise UsageError(f"CIFAR batch {where} holds a {type(batch).__name__}, not a dict; it is not a CIFAR batch")
    # Python 2 pickles give bytes keys, Python 3 ones str keys.
    entries = {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    if "data" not in entries:
        raise UsageError(f"CIFAR batch {where} has no 'data' entry; it is not a CIFAR batch")
    if "fine_labels" in entries:
        label_key, num_classes = "fine_labels", 100
    elif "labels" in entries:
        label_key, num_classes = "labels", 10
    else:
        raise UsageError(f"CIFAR batch {where} has neither 'labels' (CIFAR-10) nor 'fine_labels' (CIFAR-100)")
    data = entries["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise UsageError(f"CIFAR batch {where}: data is {dtype} with shape {shape}; expected uint8 (N, 3072)")
    labels = np.asarray(entries[label_key])
    if labels.dtype == object or not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
        raise UsageError(f"CIFAR batch {where}: {label_key} is not a list of integers")
    if labels.shape[0] != data.shape[0]:
        raise UsageError(
            f"CIFAR batch {where} has {data.shape[0]} images but {labels.shape[0]} labels; the file is corrupt"
        )
    # Rows are channel-major: 1024 red, then green, then blue, each 32x32 row-major.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64), num_classes


def _cifar_dataset(
    batches: list[Path], split: str, name: str, source: str, expect_classes: int | None = None
) -> Dataset:
    xs, ys = [], []
    num_classes = expect_classes
    for batch in batches:
        x, y, nc = _read_cifar_batch(batch)
        if num_classes is not None and nc != num_classes:
            raise UsageError(f"CIFAR batch {batch.name} has {nc}-class labels but {num_classes} were expected")
        num_classes = nc
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs) if len(xs) > 1 else xs[0]
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
    assert num_classes is not None
    return _finish(name, x.astype(np.float32) / np.float32(255.0), y, num_classes, source, split)


def _load_cifar_file(path: Path, split: str) -> Dataset:
    # A single batch is one split; CIFAR's own names say which.
    lowered = path.name.lower()
    if lowered in ("test_batch", "test"):
        split = "test"
    elif lowered.startswith("data_batch_") or lowered == "train":
        split = "train"
    return _cifar_dataset([path], split, path.name, str(path))


def _load_cifar10_dir(directory: Path, split: str) -> Dataset:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise UsageError(
            f"CIFAR-10 directory {directory} lacks {', '.join(missing)} for the {split} split; "
            "extract the complete cifar-10-batches-py archive there"
        )
    return _cifar_dataset([directory / n for n in names], split, directory.name, str(directory), 10)


def _load_cifar100_dir(directory: Path, split: str) -> Dataset:
    batch = directory / split
    if not batch.is_file():
        raise UsageError(f"CIFAR-100 directory {directory} lacks the file {split!r}; extract cifar-100-python there")
    return _cifar_dataset([batch], split, directory.name, str(directory), 100)
