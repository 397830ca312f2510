""".npz archives holding x and y (or x_<split> and y_<split>), read with allow_pickle=False."""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from robustprune.data.dataset import MAX_DATA_BYTES, Dataset, check_declared, finish, one_line, pixels_to_unit
from robustprune.data.formats import DataFormat, register_format
from robustprune.errors import UsageError
from robustprune.validation import check_input_file


@register_format("npz")
class Npz(DataFormat):
    description = (
        ".npz with arrays x (float in [0, 1]), y (or x_train/y_train, x_test/y_test), optional num_classes, and "
        "pixel_max for integer pixels"
    )

    def claims_file(self, path: Path) -> bool:
        return path.suffix.lower() == ".npz"

    def load(self, path: Path, split: str) -> Dataset:
        return _load_npz(path, split)


def _load_npz(path: Path, split: str) -> Dataset:
    where = path.name
    check_input_file(path, "dataset file", max_bytes=MAX_DATA_BYTES)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if "pickle" in str(exc):  # numpy's own text suggests loading it unsafely, which we never do
            raise UsageError(f"{where} is a pickle, not an .npz archive; save x and y with numpy.savez") from exc
        raise UsageError(f"{where} is not a readable .npz file ({one_line(exc)}); save it with numpy.savez") from exc
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
        for key in (x_key, y_key, "num_classes", "pixel_max"):
            if key in keys:
                _check_header(path, key, where)
        x = _npz_array(npz, x_key, where)
        y = _npz_array(npz, y_key, where)
        num_classes_arr = _npz_array(npz, "num_classes", where) if "num_classes" in keys else None
        pixel_max = _scalar(_npz_array(npz, "pixel_max", where), "pixel_max", where) if "pixel_max" in keys else None

    x = pixels_to_unit(_to_nchw(x, where), where, pixel_max)
    if not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"{where}: {y_key} has dtype {y.dtype}; labels must be integers (class indices)")
    if num_classes_arr is not None:
        if num_classes_arr.size != 1 or not np.issubdtype(num_classes_arr.dtype, np.integer):
            raise UsageError(f"{where}: num_classes must be a single integer, got {num_classes_arr!r}")
        num_classes = int(num_classes_arr.reshape(()))
    else:
        num_classes = int(y.max()) + 1 if y.ndim == 1 and y.size else 1
    return finish(path.name, x, y, num_classes, str(path), split)


def _check_header(path: Path, key: str, where: str) -> None:
    """An array's .npy header inside the archive, read before the array: its declared size must be one robustprune
    decodes and exactly what the archive member holds (a header claiming 10^12 images is refused unread)."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = archive.getinfo(f"{key}.npy")
            check_declared(member.file_size, where, f"array {key!r}")
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                read_header = {
                    (1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0,
                }.get(version)
                if read_header is None:
                    raise UsageError(f"{where}: array {key!r} has .npy format {version}; re-save it with numpy.savez")
                shape, _, dtype = read_header(stream)
                header = stream.tell()
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise UsageError(f"{where}: array {key!r} cannot be read ({one_line(exc)}); the file may be corrupt") from exc
    if dtype.hasobject:
        return  # refused with its own message when read (pickled objects are never loaded)
    declared = math.prod(shape) * dtype.itemsize
    check_declared(declared, where, f"array {key!r} of shape {tuple(shape)}")
    if declared != member.file_size - header:
        raise UsageError(
            f"{where}: array {key!r} declares shape {tuple(shape)} ({declared:,} bytes) but holds "
            f"{member.file_size - header:,}; the file is damaged, re-save it with numpy.savez"
        )


def _scalar(value: np.ndarray, key: str, where: str) -> float:
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise UsageError(f"{where}: {key} must be a single number, got an array of shape {value.shape}")
    return float(value.reshape(()))


def _npz_array(npz: Any, key: str, where: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise UsageError(
                f"{where}: array {key!r} holds pickled Python objects, which are not loaded; "
                "save x and y as plain numeric arrays"
            ) from exc
        raise UsageError(f"{where}: array {key!r} cannot be read ({one_line(exc)})") from exc
    except (OSError, EOFError, zlib.error, KeyError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{where}: array {key!r} cannot be read ({one_line(exc)}); the file may be corrupt") from exc


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:  # NHW: one channel
        return x[:, None, :, :]
    if x.ndim == 4:
        # NHWC is recognizable when the last axis looks like channels and the second does not.
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            return x.transpose(0, 3, 1, 2)
        return x
    raise UsageError(f"{where}: x has shape {x.shape}; store images as (N,H,W), (N,C,H,W) or (N,H,W,C)")
