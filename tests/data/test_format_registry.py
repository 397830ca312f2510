"""Every registered dataset format round-trips a tiny file it claims; adding a format adds it here by itself
(a format without a writer below fails the coverage test, so it cannot slip through untested)."""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from robustprune.data import DATA_FORMATS, load_dataset

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, size=(6, 3, 32, 32), dtype=np.uint8)
Y = np.array([0, 1, 2, 3, 4, 5])


def write_npz(root: Path) -> tuple[Path, np.ndarray]:
    np.savez(root / "tiny.npz", x=X.astype(np.float32) / 255.0, y=Y)
    return root / "tiny.npz", X.astype(np.float32) / 255.0


def write_idx(root: Path) -> tuple[Path, np.ndarray]:
    images = X[:, 0, :28, :28]
    header = (0x00000803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    labels = (0x00000801).to_bytes(4, "big") + len(Y).to_bytes(4, "big") + Y.astype(np.uint8).tobytes()
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return root, images[:, None].astype(np.float32) / 255.0


def write_cifar(root: Path) -> tuple[Path, np.ndarray]:
    batch = {b"data": X.reshape(len(X), -1), b"labels": Y.tolist(), b"batch_label": b"test"}
    (root / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    return root, X.astype(np.float32) / 255.0


WRITERS: dict[str, Callable[[Path], tuple[Path | str, np.ndarray | None]]] = {
    "npz": write_npz,
    "idx": write_idx,
    "cifar": write_cifar,
    "digits": lambda root: ("digits", None),
}


def test_every_registered_format_has_a_round_trip_here():
    assert set(DATA_FORMATS.names()) == set(WRITERS)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_format_round_trips_a_tiny_file(name, tmp_path):
    spec, expected = WRITERS[name](tmp_path)
    data = load_dataset(spec, "test")
    assert data.x.dtype.is_floating_point and float(data.x.min()) >= 0 and float(data.x.max()) <= 1
    assert data.x.ndim == 4 and len(data.y) == len(data)
    if expected is not None:
        assert np.allclose(data.x.numpy(), expected, atol=1e-6)
        assert data.y.tolist() == Y.tolist()
