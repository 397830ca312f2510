"""CIFAR-10/100 python batches (pickles), read through an allow-list unpickler that rebuilds only containers,
numbers, strings, bytes and numpy arrays: nothing in a data file can make robustprune run code."""

from __future__ import annotations

import _compat_pickle  # the stdlib's table of Python 2 -> 3 pickle names
import functools
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robustprune.data.dataset import MAX_DATA_BYTES, Dataset, finish, one_line
from robustprune.data.formats import DataFormat, register_format
from robustprune.errors import UsageError
from robustprune.validation import read_input_bytes


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
            f"CIFAR batch {where} could not be read ({type(exc).__name__}: {one_line(exc)}); "
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
    return finish(name, x.astype(np.float32) / np.float32(255.0), y, num_classes, source, split)


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


@register_format("cifar")
class Cifar(DataFormat):
    description = "CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) python batches, or one batch file"
    fallback = True  # a file no other format claims is tried as a CIFAR batch (they have no extension)

    def claims_dir(self, path: Path, names: set[str]) -> bool:
        return "test_batch" in names or any(n.startswith("data_batch_") for n in names) or {"train", "test"} <= names

    def load(self, path: Path, split: str) -> Dataset:
        if not path.is_dir():
            return _load_cifar_file(path, split)
        names = {p.name for p in path.iterdir()}
        if "test_batch" in names or any(n.startswith("data_batch_") for n in names):
            return _load_cifar10_dir(path, split)
        return _load_cifar100_dir(path, split)
