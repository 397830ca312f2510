"""The dataset format registry: each format is one module with one registered `DataFormat`.

`load_dataset` asks each registered format whether it claims a path (a file by its name, a directory by
the names inside it); a format marked `fallback` gets a file nobody claimed. Named datasets (`digits`) are formats
with `names`. Adding a format: a module with a registered subclass, imported in `robustprune/data/__init__.py`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from robustprune.boundary import call_user
from robustprune.data.dataset import MAX_DATA_BYTES, SPLITS, Dataset
from robustprune.errors import UsageError
from robustprune.registry import Registry
from robustprune.validation import check_input_file, escape


class DataFormat(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    names: ClassVar[tuple[str, ...]] = ()  # dataset names (not paths) this format answers to
    fallback: ClassVar[bool] = False  # gets files that no other format claims

    def claims_file(self, path: Path) -> bool:
        """Whether a file is this format's (by its name; raise UsageError for a near miss worth explaining)."""
        return False

    def claims_dir(self, path: Path, names: set[str]) -> bool:
        """Whether a directory holding files `names` is this format's."""
        return False

    @abstractmethod
    def load(self, path: Path, split: str) -> Dataset:
        """The `split` of the dataset at `path` (for named formats, `path` is the name)."""


DATA_FORMATS: Registry[DataFormat] = Registry("dataset format")


def register_format(name: str) -> Callable[[type[DataFormat]], type[DataFormat]]:
    """Register an instance of the decorated DataFormat under `name` (also its `name` attribute)."""
    return DATA_FORMATS.register_instance(name)


NOT_FOUND = (
    "dataset {spec!r} not found: use 'digits' or a path to a .npz file, an MNIST IDX file/directory, "
    "or a CIFAR batch directory"
)


def load_dataset(spec: str | os.PathLike[str], split: str = "test") -> Dataset:
    """A named dataset ('digits') or the dataset at a path, in whichever registered format claims it."""
    if split not in SPLITS:
        raise UsageError(f"split {split!r} is not known; use one of: {', '.join(SPLITS)}")
    if not isinstance(spec, str | os.PathLike):
        raise UsageError(f"--dataset must be 'digits' or a path, got {escape(repr(spec))}")
    spec_str = os.fspath(spec)
    formats = [DATA_FORMATS.get(name) for name in DATA_FORMATS.names()]
    named = next((f for f in formats if spec_str in f.names), None)
    if named is not None:
        return _ask(named, "load", Path(spec_str), split)
    if not spec_str:
        raise UsageError(NOT_FOUND.format(spec=spec_str))
    try:
        path = check_input_file(spec_str, "--dataset", max_bytes=MAX_DATA_BYTES, allow_dir=True)
    except UsageError as err:
        if "does not exist" in str(err):
            raise UsageError(NOT_FOUND.format(spec=escape(spec_str))) from None
        raise
    path = path.resolve()
    ordered = sorted(formats, key=lambda f: f.fallback)  # claims are disjoint; the fallback is asked last
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        found = next((f for f in ordered if _ask(f, "claims_dir", path, names)), None)
        if found is None:
            known = "; ".join(f"{f.name}: {f.description}" for f in ordered if not f.names)
            raise UsageError(f"directory {escape(path)} holds no known dataset (formats: {known})")
        return _ask(found, "load", path, split)
    if path.suffix.lower() == ".npy":
        raise UsageError(f"{path.name}: a .npy file holds one array; save x and y together with numpy.savez")
    found = next((f for f in ordered if _ask(f, "claims_file", path)), None) or next(
        (f for f in ordered if f.fallback), None
    )
    if found is None:
        raise UsageError(NOT_FOUND.format(spec=escape(spec_str)))
    return _ask(found, "load", path, split)


def _ask(fmt: DataFormat, method: str, *args: object) -> Any:
    """Call a format's method; a format registered from outside robustprune is user code, called through the
    boundary (whatever it raises is one line naming it, exit 2), and its `load` must return a Dataset."""
    call = getattr(fmt, method)
    if type(fmt).__module__.startswith("robustprune."):
        return call(*args)
    who = f"the dataset format {fmt.name!r} ({type(fmt).__module__}.{type(fmt).__qualname__}.{method})"
    out = call_user(call, *args, who=who, unusable=True)
    if method == "load" and not isinstance(out, Dataset):
        raise UsageError(f"{who} returned a {type(out).__name__}, not a robustprune Dataset")
    return out
