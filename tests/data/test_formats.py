"""robustprune.data: the embedded digits split, local file formats (made here, tiny), safety and validation."""

from __future__ import annotations

import gzip
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from robustprune.data import Dataset, as_dataset, load_dataset, validate_examples
from robustprune.errors import UsageError


def _one_line_usage_error(excinfo: pytest.ExceptionInfo[UsageError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_dtypes_and_range() -> None:
    test, train = load_dataset("digits"), load_dataset("digits", split="train")
    assert (len(test), len(train)) == (360, 1437)
    for ds in (test, train):
        assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
        assert ds.x.is_contiguous() and ds.x.shape[1:] == (1, 8, 8) and ds.input_shape == (1, 8, 8)
        assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
        assert ds.num_classes == 10 and set(ds.y.tolist()) == set(range(10))
        assert ds.source == "sklearn.datasets.load_digits" and ds.name == "digits"
    assert (test.split, train.split) == ("test", "train")
    # Pixels are 0..16 in sklearn, so every value is a multiple of 1/16.
    assert torch.equal(test.x * 16, torch.round(test.x * 16))


def test_digits_split_is_stratified() -> None:
    test, train = load_dataset("digits"), load_dataset("digits", split="train")
    test_counts = torch.bincount(test.y, minlength=10).double()
    train_counts = torch.bincount(train.y, minlength=10).double()
    # test_size=0.2: each class's test count is a fifth of its total, to within one example.
    expected_test = (test_counts + train_counts) * len(test) / (len(test) + len(train))
    assert torch.all((test_counts - expected_test).abs() <= 1.0)


def test_digits_split_is_identical_on_repeat_and_not_shared() -> None:
    first = load_dataset("digits")
    first.x.fill_(0.5)  # a caller scribbling on its tensors must not corrupt the cached arrays
    again, third = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(again.x, third.x) and torch.equal(again.y, third.y)
    assert float(again.x.max()) == 1.0
    assert again.fingerprint() == third.fingerprint()


def test_digits_train_and_test_do_not_overlap() -> None:
    test, train = load_dataset("digits"), load_dataset("digits", split="train")
    train_rows = {bytes(row.numpy().tobytes()) for row in train.x}
    overlap = sum(bytes(row.numpy().tobytes()) in train_rows for row in test.x)
    # load_digits has a few exact duplicate images; a leaked split would share hundreds.
    assert overlap < 10


def test_subset_takes_first_n_and_rejects_bad_n() -> None:
    ds = load_dataset("digits")
    sub = ds.subset(10)
    assert len(sub) == 10 and torch.equal(sub.x, ds.x[:10]) and torch.equal(sub.y, ds.y[:10])
    assert sub.split == "test" and sub.num_classes == 10
    assert ds.subset(None) is ds and len(ds.subset(360)) == 360
    with pytest.raises(UsageError) as excinfo:
        ds.subset(900)
    assert _one_line_usage_error(excinfo) == (
        "--n 900 is beyond the dataset (digits test split has 360 examples); pass --n 360 or fewer"
    )
    with pytest.raises(UsageError, match=r"--n 0 .*between 1 and 360"):
        ds.subset(0)
    with pytest.raises(UsageError, match=r"--n -3"):
        ds.subset(-3)


def test_fingerprint_is_stable_and_tells_examples_apart() -> None:
    test, train = load_dataset("digits"), load_dataset("digits", split="train")
    fp = test.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert fp == load_dataset("digits").fingerprint()
    assert fp != train.fingerprint()
    assert fp != test.subset(359).fingerprint()
    relabelled = Dataset(test.name, test.x, (test.y + 1) % 10, 10, test.source, test.split)
    assert fp != relabelled.fingerprint()


def test_repr_is_short() -> None:
    text = repr(load_dataset("digits"))
    assert "n=360" in text and "input_shape=(1, 8, 8)" in text and len(text) < 200


def test_unknown_spec_and_split() -> None:
    with pytest.raises(UsageError) as excinfo:
        load_dataset("foo")
    assert _one_line_usage_error(excinfo) == (
        "dataset 'foo' not found: use 'digits' or a path to a .npz file, an MNIST IDX file/directory, "
        "or a CIFAR batch directory"
    )
    with pytest.raises(UsageError, match="split 'val'"):
        load_dataset("digits", split="val")


def test_directory_without_known_files(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(UsageError, match="holds no known dataset"):
        load_dataset(str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# .npz


def test_npz_uint8_nhwc_is_scaled_as_the_file_says_and_transposed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5, 4, 6, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 1, 0])
    path = tmp_path / "rgb.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(UsageError, match=r"uint8 pixels \(0..255\), so eps would not be in \[0, 1\] pixel units"):
        load_dataset(str(path))  # integer pixels are ambiguous: the file must say how to read them
    np.savez(path, x=x, y=y, pixel_max=255)
    ds = load_dataset(str(path))
    assert ds.x.shape == (5, 3, 4, 6) and ds.x.dtype == torch.float32 and ds.x.is_contiguous()
    # Pixel (n=2, h=1, w=4, channel 2) lands at [2, 2, 1, 4], scaled by 1/255.
    assert ds.x[2, 2, 1, 4].item() == pytest.approx(x[2, 1, 4, 2] / 255.0)
    assert float(ds.x.max()) <= 1.0 and ds.num_classes == 3 and ds.name == "rgb.npz"
    assert ds.source == str(path.resolve()) and ds.y.dtype == torch.int64


def test_npz_float_nhw_gets_a_channel_and_num_classes_from_file(tmp_path: Path) -> None:
    x = np.linspace(0, 1, 4 * 5 * 5, dtype=np.float64).reshape(4, 5, 5)
    path = tmp_path / "gray.npz"
    np.savez(path, x=x, y=np.array([0, 1, 0, 1], dtype=np.int32), num_classes=np.int64(7))
    ds = load_dataset(str(path))
    assert ds.x.shape == (4, 1, 5, 5) and ds.x.dtype == torch.float32
    assert torch.allclose(ds.x[:, 0].double(), torch.from_numpy(x))
    assert ds.num_classes == 7 and ds.y.dtype == torch.int64


def test_npz_nchw_kept_and_split_keys_picked(tmp_path: Path) -> None:
    path = tmp_path / "both.npz"
    x_train = np.zeros((3, 3, 4, 4), dtype=np.float32)
    x_test = np.ones((2, 3, 4, 4), dtype=np.float32)
    np.savez(path, x_train=x_train, y_train=np.array([0, 1, 2]), x_test=x_test, y_test=np.array([1, 1]))
    test, train = load_dataset(str(path)), load_dataset(str(path), "train")
    assert test.x.shape == (2, 3, 4, 4) and float(test.x.min()) == 1.0 and test.split == "test"
    assert train.x.shape == (3, 3, 4, 4) and float(train.x.max()) == 0.0 and train.split == "train"
    assert test.fingerprint() != train.fingerprint()

    only_train = tmp_path / "train_only.npz"
    np.savez(only_train, x_train=x_train, y_train=np.array([0, 1, 2]))
    with pytest.raises(UsageError, match=r"has no test split \(keys: x_train, y_train\)"):
        load_dataset(str(only_train))


def _marker_payload(marker: Path) -> object:
    class WritesMarker:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    return WritesMarker()


def test_npz_object_array_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    x = np.empty(1, dtype=object)
    x[0] = _marker_payload(marker)
    np.savez(path, x=x, y=np.array([0]))
    with pytest.raises(UsageError) as excinfo:
        load_dataset(str(path))
    assert "pickled Python objects" in _one_line_usage_error(excinfo) and "evil.npz" in str(excinfo.value)
    assert not marker.exists()
    # Control: the payload is live, so the check above proves something.
    with np.load(path, allow_pickle=True) as npz:
        npz["x"]
    assert marker.exists()


def test_npz_bad_contents_are_usage_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.full((2, 1, 3, 3), 3.0), y=np.array([0, 1]))
    with pytest.raises(UsageError, match=r"bad\.npz: x has values outside \[0,1\] \(min 3, max 3\)"):
        load_dataset(str(path))
    np.savez(path, x=np.zeros((2, 3, 3), dtype=np.int64), y=np.array([0, 1]))
    with pytest.raises(UsageError, match="holds int64 pixels .*store pixel_max=255"):
        load_dataset(str(path))
    np.savez(path, x=np.zeros((2, 3, 3)), y=np.array([0.0, 1.0]))
    with pytest.raises(UsageError, match="labels must be integers"):
        load_dataset(str(path))
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(UsageError, match="pickled.npz is a pickle, not an .npz archive"):
        load_dataset(str(pickled))
    not_zip = tmp_path / "junk.npz"
    not_zip.write_bytes(b"not a zip file at all")
    with pytest.raises(UsageError, match="junk.npz"):
        load_dataset(str(not_zip))


# ---------------------------------------------------------------------------------------------------------------
# MNIST IDX


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _mnist_dir(root: Path, gz: bool, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train_x": rng.integers(0, 256, size=(n_train, 7, 5), dtype=np.uint8),
        "train_y": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, size=(n_test, 7, 5), dtype=np.uint8),
        "test_y": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for prefix, key in (("train", "train"), ("t10k", "test")):
        _write(root / f"{prefix}-images-idx3-ubyte", _idx_bytes(arrays[f"{key}_x"], 0x803), gz)
        _write(root / f"{prefix}-labels-idx1-ubyte", _idx_bytes(arrays[f"{key}_y"], 0x801), gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory(tmp_path: Path, gz: bool) -> None:
    arrays = _mnist_dir(tmp_path / "mnist", gz)
    test, train = load_dataset(str(tmp_path / "mnist")), load_dataset(str(tmp_path / "mnist"), "train")
    assert test.x.shape == (4, 1, 7, 5) and train.x.shape == (6, 1, 7, 5)
    assert np.allclose(test.x[:, 0].numpy(), arrays["test_x"] / 255.0)
    assert test.y.tolist() == arrays["test_y"].tolist() and train.y.tolist() == arrays["train_y"].tolist()
    assert test.num_classes == 10 and test.x.dtype == torch.float32 and test.y.dtype == torch.int64
    assert (test.name, test.split, train.split) == ("mnist", "test", "train")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_file_finds_its_labels_and_names_its_split(tmp_path: Path, gz: bool) -> None:
    arrays = _mnist_dir(tmp_path, gz)
    images = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    ds = load_dataset(str(images))  # default split is "test", but this file is the training split
    assert ds.split == "train" and len(ds) == 6
    assert ds.y.tolist() == arrays["train_y"].tolist() and ds.source == str(images.resolve())


def test_idx_labels_file_passed_instead_of_images(tmp_path: Path) -> None:
    _mnist_dir(tmp_path, gz=False)
    with pytest.raises(UsageError, match="labels file; pass the matching"):
        load_dataset(str(tmp_path / "t10k-labels-idx1-ubyte"))


def test_idx_truncated_wrong_magic_and_count_mismatch(tmp_path: Path) -> None:
    _mnist_dir(tmp_path, gz=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    good = images.read_bytes()

    images.write_bytes(good[:-7])
    with pytest.raises(UsageError) as excinfo:
        load_dataset(str(tmp_path))
    assert re.search(
        r"t10k-images-idx3-ubyte is truncated \(header says 4x7x5 = 140 bytes, found 133\)",
        _one_line_usage_error(excinfo),
    )

    images.write_bytes(good[:10])  # cut inside the header
    with pytest.raises(UsageError, match="truncated inside its IDX header"):
        load_dataset(str(tmp_path))

    images.write_bytes((0x801).to_bytes(4, "big") + good[4:])
    with pytest.raises(UsageError, match=r"t10k-images-idx3-ubyte is not an MNIST IDX images file \(magic 0x00000801"):
        load_dataset(str(tmp_path))

    images.write_bytes(good)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(_idx_bytes(np.zeros(3, dtype=np.uint8), 0x801))
    with pytest.raises(UsageError, match="has 4 images but t10k-labels-idx1-ubyte has 3 labels"):
        load_dataset(str(tmp_path))


def test_idx_corrupt_gzip_and_missing_split(tmp_path: Path) -> None:
    _mnist_dir(tmp_path, gz=True)
    gz_path = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz_path.write_bytes(gz_path.read_bytes()[:20])
    with pytest.raises(UsageError, match=r"t10k-images-idx3-ubyte\.gz cannot be read"):
        load_dataset(str(tmp_path))
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UsageError, match=r"lacks train-labels-idx1-ubyte\[\.gz\] for the train split"):
        load_dataset(str(tmp_path), "train")


def test_idx_label_beyond_ten_classes(tmp_path: Path) -> None:
    _mnist_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([0, 1, 2, 12], dtype=np.uint8), 0x801))
    with pytest.raises(UsageError, match=r"labels must be in \[0, 10\) but range from 0 to 12"):
        load_dataset(str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# CIFAR python batches


def _cifar_batch(path: Path, n: int, num_classes: int, seed: int, extra: dict | None = None) -> tuple:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
    key = b"fine_labels" if num_classes == 100 else b"labels"
    # Python-2-style batch: bytes keys, protocol 2, like the published archives.
    batch = {b"batch_label": b"testing batch", b"data": data, key: labels, b"filenames": [b"a.png"] * n}
    if num_classes == 100:
        batch[b"coarse_labels"] = [v // 5 for v in labels]
    batch.update(extra or {})
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=2)
    return data, labels


def test_cifar10_directory(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    train_parts = [_cifar_batch(root / f"data_batch_{i}", 2, 10, seed=i) for i in range(1, 6)]
    test_data, test_labels = _cifar_batch(root / "test_batch", 3, 10, seed=9)
    test, train = load_dataset(str(root)), load_dataset(str(root), "train")
    assert test.x.shape == (3, 3, 32, 32) and train.x.shape == (10, 3, 32, 32)
    assert test.num_classes == 10 and test.y.tolist() == test_labels and test.name == "cifar-10-batches-py"
    assert train.y.tolist() == [v for _, labels in train_parts for v in labels]
    # Row layout is 1024 red, 1024 green, 1024 blue, each 32x32 row-major.
    assert test.x[1, 1, 2, 5].item() == pytest.approx(test_data[1, 1024 + 2 * 32 + 5] / 255.0)
    assert test.x.dtype == torch.float32 and float(test.x.max()) <= 1.0


def test_cifar10_directory_missing_batch(tmp_path: Path) -> None:
    for i in (1, 2, 4, 5):
        _cifar_batch(tmp_path / f"data_batch_{i}", 1, 10, seed=i)
    _cifar_batch(tmp_path / "test_batch", 1, 10, seed=0)
    assert len(load_dataset(str(tmp_path))) == 1
    with pytest.raises(UsageError, match="lacks data_batch_3 for the train split"):
        load_dataset(str(tmp_path), "train")


def test_cifar100_directory(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    _, train_labels = _cifar_batch(root / "train", 4, 100, seed=3)
    _, test_labels = _cifar_batch(root / "test", 2, 100, seed=4)
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": []}, protocol=2))
    test, train = load_dataset(str(root)), load_dataset(str(root), "train")
    assert test.num_classes == 100 and train.num_classes == 100
    assert test.y.tolist() == test_labels and train.y.tolist() == train_labels
    assert train.x.shape == (4, 3, 32, 32)


def test_cifar_single_file_str_keys_and_numpy1_names(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    data = np.full((2, 3072), 255, dtype=np.uint8)
    # Sets and bytes are written as __builtin__.set / __builtin__.bytes in protocol 2: harmless, so admitted.
    extras = {"tags": {1, 2}, "empty": b"", "ratio": 1 + 2j, "label_names": ("a", "b")}
    raw = pickle.dumps({"data": data, "labels": np.array([3, 4]), **extras}, protocol=2)
    assert b"__builtin__" in raw
    # numpy 1.x wrote numpy.core.multiarray; those pickles must still load under numpy 2.
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw
    path.write_bytes(raw)
    ds = load_dataset(str(path))
    assert ds.split == "train" and ds.y.tolist() == [3, 4] and float(ds.x.min()) == 1.0 and ds.num_classes == 10


def _py2_str(value: bytes) -> bytes:
    return b"U" + bytes([len(value)]) + value  # SHORT_BINSTRING: how Python 2 pickled a str


def test_cifar_python2_pickle_loads(tmp_path: Path) -> None:
    # Hand-assembled the way Python 2 + numpy 1.x wrote the published batches: py2 str keys and array bytes,
    # numpy.core names, _reconstruct + BUILD state with the raw pixel string.
    pixels = bytes(range(256)) * 24  # 2 x 3072
    raw = (
        b"\x80\x02}q\x00("
        + _py2_str(b"data")
        + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + _py2_str(b"b")
        + b"\x87R"
        + b"(K\x01K\x02M\x00\x0c\x86cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + b"K\x00K\x01\x87R"
        + b"(K\x03"
        + _py2_str(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89T"
        + len(pixels).to_bytes(4, "little")
        + pixels
        + b"tb"
        + _py2_str(b"labels")
        + b"](K\x01K\x07eu."
    )
    path = tmp_path / "test_batch"
    path.write_bytes(raw)
    ds = load_dataset(str(path))
    assert ds.x.shape == (2, 3, 32, 32) and ds.y.tolist() == [1, 7] and ds.split == "test"
    assert ds.x[0, 0, 0, 3].item() == pytest.approx(3 / 255.0)
    assert ds.x[1, 2, 31, 31].item() == pytest.approx(pixels[2 * 3072 - 1] / 255.0)


def test_cifar_os_system_payload_refused(tmp_path: Path) -> None:
    marker = tmp_path / "SOMEFILE"

    class Shell:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "test_batch"
    _cifar_batch(path, 1, 10, seed=0, extra={b"labels": Shell()})
    with pytest.raises(UsageError) as excinfo:
        load_dataset(str(path))
    message = _one_line_usage_error(excinfo)
    assert re.fullmatch(
        r"CIFAR batch test_batch refers to (os|posix|nt)\.system, which is not allowed in a data file; "
        r"this file is not a plain CIFAR batch",
        message,
    )
    assert not marker.exists()


def test_cifar_exec_payload_refused_and_nothing_ran(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = tmp_path / "cifar"
    root.mkdir()
    _cifar_batch(root / "test_batch", 2, 10, seed=0, extra={b"data": _marker_payload(marker)})
    with pytest.raises(UsageError, match=r"refers to builtins\.exec, which is not allowed"):
        load_dataset(str(root))
    assert not marker.exists()
    # Control: an ordinary unpickler runs the payload, so the absence of the marker above is meaningful.
    pickle.loads((root / "test_batch").read_bytes(), encoding="bytes")
    assert marker.exists()


def test_cifar_codecs_encode_only_rebuilds_latin1_bytes(tmp_path: Path) -> None:
    # _codecs.encode is admitted for protocol-2 bytes; it must not become a general codec gadget.
    path = tmp_path / "test_batch"
    path.write_bytes(b"c_codecs\nencode\n(X\x03\x00\x00\x00abcX\x06\x00\x00\x00rot_13tR.")
    with pytest.raises(UsageError, match=r"could not be read \(UnpicklingError: _codecs\.encode"):
        load_dataset(str(path))


def test_cifar_build_opcode_cannot_rewrite_admitted_functions(tmp_path: Path) -> None:
    # BUILD with slot state setattr()s on the object below it; aimed at numpy's _frombuffer it would change
    # that function for the whole process.
    frombuffer = pickle.loads(b"cnumpy._core.numeric\n_frombuffer\n.")
    before = frombuffer.__defaults__
    key, value = b"__defaults__", b"C"
    path = tmp_path / "test_batch"
    path.write_bytes(
        b"\x80\x02cnumpy._core.numeric\n_frombuffer\nN}X"
        + len(key).to_bytes(4, "little")
        + key
        + b"X"
        + len(value).to_bytes(4, "little")
        + value
        + b"\x85s\x86b."
    )
    with pytest.raises(UsageError, match="CIFAR batch test_batch could not be read"):
        load_dataset(str(path))
    assert frombuffer.__defaults__ == before


def test_cifar_malformed_files(tmp_path: Path) -> None:
    path = tmp_path / "test_batch"
    path.write_bytes(b"\x80\x02}q\x00(")  # truncated pickle
    with pytest.raises(UsageError, match="CIFAR batch test_batch could not be read"):
        load_dataset(str(path))
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(UsageError, match="holds a list, not a dict"):
        load_dataset(str(path))
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(UsageError, match=r"expected uint8 \(N, 3072\)"):
        load_dataset(str(path))
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0]}, protocol=2))
    with pytest.raises(UsageError, match="has 2 images but 1 labels"):
        load_dataset(str(path))


# ---------------------------------------------------------------------------------------------------------------
# validation and as_dataset


def _good() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(4, 1, 3, 3), torch.tensor([0, 1, 2, 1])


def test_validate_accepts_good_examples() -> None:
    x, y = _good()
    validate_examples(x, y, 3, "ok")  # no exception is the assertion; the next line checks nothing changed
    assert x.shape == (4, 1, 3, 3)


@pytest.mark.parametrize(
    ("x", "y", "num_classes", "pattern"),
    [
        (
            torch.tensor([[[[0.1, float("nan")]]]]).expand(4, 1, 1, 2),
            torch.tensor([0, 1, 2, 1]),
            3,
            r"^where: x has 4 NaN or infinite values; clean or drop",
        ),
        (
            torch.full((4, 1, 3, 3), 0.5).index_fill(0, torch.tensor([1]), float("inf")),
            torch.tensor([0, 1, 2, 1]),
            3,
            r"NaN or infinite",
        ),
        (
            torch.cat([torch.full((2, 1, 3, 3), -0.5), torch.full((2, 1, 3, 3), 3.0)]),
            torch.tensor([0, 1, 2, 1]),
            3,
            r"^where: x has values outside \[0,1\] \(min -0\.5, max 3\); scale inputs to \[0,1\] and put normalization",
        ),
        (
            torch.rand(4, 9),
            torch.tensor([0, 1, 2, 1]),
            3,
            r"^where: x has shape \(4, 9\) \(rank 2\); inputs must be rank 4",
        ),
        (
            torch.rand(4, 1, 3, 3),
            torch.tensor([0, 1, 3, 1]),
            3,
            r"^where: labels must be in \[0, 3\) but range from 0 to 3; .*num_classes to at least 4",
        ),
        (torch.rand(4, 1, 3, 3), torch.tensor([0, -1, 2, 1]), 3, r"range from -1 to 2"),
        (torch.rand(4, 1, 3, 3), torch.tensor([0, 1, 2]), 3, r"^where: x has 4 examples but y has 3 labels"),
        (torch.randint(0, 2, (4, 1, 3, 3)), torch.tensor([0, 1, 2, 1]), 3, r"x has dtype torch\.int64; convert"),
        (torch.rand(4, 1, 3, 3), torch.tensor([0.0, 1.0, 2.0, 1.0]), 3, r"y has dtype torch\.float32"),
        (torch.rand(4, 1, 3, 3), torch.tensor([[0, 1, 2, 1]]), 3, r"y has shape \(1, 4\)"),
        (torch.rand(0, 1, 3, 3), torch.tensor([], dtype=torch.int64), 3, r"there are no examples"),
        (torch.rand(4, 1, 3, 3), torch.tensor([0, 1, 2, 1]), 0, r"num_classes must be a positive integer"),
    ],
)
def test_validate_rejects(x: torch.Tensor, y: torch.Tensor, num_classes: int, pattern: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        validate_examples(x, y, num_classes, "where")
    assert re.search(pattern, _one_line_usage_error(excinfo))


def test_as_dataset_from_numpy_and_tensors() -> None:
    x = np.random.default_rng(0).random((5, 2, 4, 4))  # float64 in [0,1)
    ds = as_dataset(x, np.array([0, 3, 1, 1, 2], dtype=np.int32))
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64 and ds.num_classes == 4
    assert ds.name == "tensors" and ds.split == "test" and ds.input_shape == (2, 4, 4) and len(ds) == 5
    tx, ty = _good()
    named = as_dataset(tx, ty, num_classes=10, name="mine")
    assert named.num_classes == 10 and named.name == "mine" and torch.equal(named.x, tx)
    with pytest.raises(UsageError, match=r"^mine: x has shape \(4, 9\)"):
        as_dataset(torch.rand(4, 9), ty, name="mine")
    with pytest.raises(UsageError, match="y has dtype torch.float64"):
        as_dataset(tx, np.array([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(UsageError, match="object array"):
        as_dataset(np.array([None] * 4, dtype=object), ty)
