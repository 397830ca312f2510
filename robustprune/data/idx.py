"""MNIST IDX files: a directory with train-/t10k-images-idx3-ubyte[.gz] and labels, or one images file."""

from __future__ import annotations

import math
import re
import zlib
from pathlib import Path

import numpy as np

from robustprune.data.dataset import MAX_DATA_BYTES, Dataset, check_declared, finish, one_line
from robustprune.data.formats import DataFormat, register_format
from robustprune.errors import UsageError
from robustprune.validation import read_input_bytes

_IDX_IMAGES = re.compile(r"images[-.]idx3", re.IGNORECASE)
_IDX_LABELS = re.compile(r"labels[-.]idx1", re.IGNORECASE)
_IDX_IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension


class _Bytes:
    """A file's bytes, decompressed (gzip) only as far as they are asked for: the header first, then exactly what
    it declares, so a gzip that inflates to gigabytes is refused before it is inflated."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.raw = read_input_bytes(path, "dataset file", max_bytes=MAX_DATA_BYTES)
        self.gz = path.suffix.lower() == ".gz"
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gz else None
        self.data = b"" if self.gz else self.raw

    def take(self, n: int) -> bytes:
        """The first n bytes (fewer when the file ends before)."""
        try:
            while self.inflater is not None and len(self.data) < n and not self.inflater.eof:
                source = (
                    self.raw if not self.data and not self.inflater.unconsumed_tail else self.inflater.unconsumed_tail
                )
                chunk = self.inflater.decompress(source, n - len(self.data))
                self.data += chunk
                if not chunk and not self.inflater.unconsumed_tail:
                    break
        except zlib.error as exc:
            raise UsageError(f"{self.name} cannot be read ({one_line(exc)}); re-download or re-extract it") from exc
        if self.inflater is not None and len(self.data) < n and not self.inflater.eof:
            raise UsageError(
                f"{self.name} cannot be read (the compressed data ends early); re-download or re-extract it"
            )
        return self.data[:n]

    def more_than(self, n: int) -> bool:
        """Whether the file holds more than n bytes."""
        return len(self.take(n + 1)) > n


def _parse_idx(path: Path, magic_expected: int, kind: str) -> np.ndarray:
    stream = _Bytes(path)
    head = stream.take(4)
    if len(head) < 4:
        raise UsageError(f"{path.name} is truncated ({len(head)} bytes, no IDX header); re-download or re-extract it")
    magic = int.from_bytes(head, "big")
    if magic != magic_expected:
        raise UsageError(
            f"{path.name} is not an MNIST IDX {kind} file (magic 0x{magic:08x}, expected 0x{magic_expected:08x}); "
            f"pass the *-{kind}-idx{magic_expected & 0xFF}-ubyte file"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    head = stream.take(header)
    if len(head) < header:
        raise UsageError(f"{path.name} is truncated inside its IDX header; re-download or re-extract it")
    dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)  # Python integers: dimensions whose product overflows int64 are simply too large
    check_declared(expected, path.name, f"its IDX header ({'x'.join(map(str, dims))})")
    data = stream.take(header + expected)
    found = len(data) - header
    if found < expected:
        shape = "x".join(map(str, dims))
        raise UsageError(
            f"{path.name} is truncated (header says {shape} = {expected} bytes, found {found}); "
            "re-download or re-extract it"
        )
    if stream.more_than(header + expected):
        raise UsageError(f"{path.name} has bytes beyond what its IDX header declares; it is corrupt")
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
    return finish(name, x, y.astype(np.int64), 10, source, split)


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


@register_format("idx")
class Idx(DataFormat):
    description = "MNIST IDX: a directory of (train|t10k)-(images|labels)-idx?-ubyte[.gz], or one images file"

    def claims_file(self, path: Path) -> bool:
        if _IDX_LABELS.search(path.name):
            raise UsageError(f"{path.name} is an MNIST labels file; pass the matching *-images-idx3-ubyte file instead")
        return bool(_IDX_IMAGES.search(path.name))

    def claims_dir(self, path: Path, names: set[str]) -> bool:
        return any(n.startswith(("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")) for n in names)

    def load(self, path: Path, split: str) -> Dataset:
        return _load_idx_dir(path, split) if path.is_dir() else _load_idx_file(path, split)
