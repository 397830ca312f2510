"""One validation layer for every input, shared by the CLI flags, TOML files and the Python API.

Everything a command needs is checked here before a model is loaded or a step is trained: numbers are finite and
inside documented bounds, seeds fit every RNG, files are regular, readable files of sane size, and the output
directory can be created and written. Each failure is a UsageError whose message is one line (control characters
in echoed user text are escaped) saying what is wrong and how to fix it.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustprune.errors import UsageError

SEED_MAX = 2**32 - 1  # numpy's RandomState and every library seed we pass take 32-bit seeds
INT_LIMIT = 2**31 - 1  # no integer setting anywhere is meaningful beyond this


@dataclass(frozen=True)
class Bound:
    lo: float
    hi: float
    what: str  # why the bound is there, for the docs

    def check(self, value: float, where: str) -> None:
        if not self.lo <= value <= self.hi:
            raise UsageError(f"{where} must be between {self.lo:g} and {self.hi:g}, got {value!r}")


# Documented upper bounds (README "Limits"): a value beyond them is a typo, not an experiment, and would run for
# days or exhaust memory. Keyed by setting name wherever it appears (battery, recipe, sweep, flag).
BOUNDS: dict[str, Bound] = {
    "steps": Bound(1, 100_000, "attack iterations"),
    "n_restarts": Bound(1, 1_000, "attack restarts"),
    "n_queries": Bound(1, 1_000_000, "queries of a score-based attack"),
    "eot_iter": Bound(1, 10_000, "forward passes averaged per EOT step"),
    "n_target_classes": Bound(1, 10_000, "targets of a targeted attack"),
    "rel_step": Bound(1e-9, 100.0, "step size as a fraction of eps"),
    "epochs": Bound(0, 100_000, "training epochs"),
    "batch_size": Bound(1, 1_000_000, "examples per batch"),
    "lr": Bound(1e-12, 1e3, "learning rate"),
    "momentum": Bound(0, 1, "SGD momentum"),
    "base_momentum": Bound(0, 1, "SGD momentum at the peak of a cyclic lr (cycle_momentum)"),
    "weight_decay": Bound(0, 10, "weight decay"),
    "probe_eps": Bound(0, 1, "Linf eps of the per-epoch PGD probe"),
    "probe_steps": Bound(0, 100_000, "steps of the per-epoch PGD probe"),
    "probe_size": Bound(1, 1_000_000, "examples of the per-epoch PGD probe"),
    "threads": Bound(1, 4_096, "torch CPU threads"),
    "workers": Bound(1, 4_096, "parallel workers"),
    "seed": Bound(0, SEED_MAX, "random seed"),
    "exact_time_limit": Bound(0.01, 86_400, "seconds of exact search per example"),
    "exact_budget": Bound(0, 30 * 86_400, "seconds of exact search in all"),
    "max_gap": Bound(0, 100, "points between the certified and the attacked robust accuracy"),
}


def escape(text: object) -> str:
    """User text (paths, names) as it may appear inside a one-line message: control characters escaped."""
    out = []
    for ch in str(text):
        if ch == "\\" or ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def check_int(value: Any, where: str, *, bound: str | None = None, lo: int | None = None) -> int:
    """An int (not a bool), inside BOUNDS[bound] when given, else >= lo when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where} must be an integer, got {escape(repr(value))}")
    if bound is not None:
        BOUNDS[bound].check(value, where)
    elif lo is not None and value < lo:
        raise UsageError(f"{where} must be >= {lo}, got {value}")
    return value


def check_float(value: Any, where: str, *, bound: str | None = None) -> float:
    """A finite number (ints accepted), inside BOUNDS[bound] when given."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"{where} must be a finite number, got {escape(repr(value))}")
    if bound is not None:
        BOUNDS[bound].check(value, where)
    return float(value)


def check_seed(seed: Any, where: str = "--seed") -> int:
    return check_int(seed, where, bound="seed")


# ---------------------------------------------------------------- files


def stat_path(path: Path, what: str) -> os.stat_result | None:
    """os.stat with every OS failure turned into a one-line UsageError; None when the path does not exist."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{what} {escape(path)} cannot be used: {os_reason(exc)}") from None


def os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "a path component is longer than the filesystem allows; use a shorter name"
    if exc.errno == errno.ENOTDIR:
        return "a component of the path is a file, not a directory"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "the filesystem is read-only"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or type(exc).__name__


def path_kind(path: str | os.PathLike, what: str) -> str:
    """ "missing", "dir", "file" (regular) or "other" for a user-given path; OS failures (a name too long, a
    component that is a file) are one-line errors instead of exceptions from Path.exists / is_dir."""
    st = stat_path(Path(path), what)
    if st is None:
        return "missing"
    return "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"


def check_input_file(path: str | os.PathLike, what: str, *, max_bytes: int, allow_dir: bool = False) -> Path:
    """A regular, readable file no larger than max_bytes (or, with allow_dir, a readable directory).

    Devices, FIFOs and sockets are refused before anything reads them: /dev/zero would be read until memory ran
    out, and a FIFO would block for ever.
    """
    shown = escape(path)
    path = Path(path).expanduser()
    st = stat_path(path, what)
    if st is None:
        raise UsageError(f"{what} {shown} does not exist; check the path")
    if stat.S_ISDIR(st.st_mode):
        if not allow_dir:
            raise UsageError(f"{what} {shown} is a directory, not a file; pass a file")
        if not os.access(path, os.R_OK | os.X_OK):
            raise UsageError(f"{what} {shown} cannot be read: permission denied")
        return path
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} {shown} is not a regular file (a device, FIFO or socket); pass a file")
    if st.st_size > max_bytes:
        raise UsageError(f"{what} {shown} is {st.st_size:,} bytes, more than the {max_bytes:,} allowed")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {shown} cannot be read: permission denied")
    return path


def read_input_bytes(path: str | os.PathLike, what: str, *, max_bytes: int) -> bytes:
    """The bytes of a file that passed check_input_file (checked again: directories are walked after the check)."""
    path = check_input_file(path, what, max_bytes=max_bytes)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{what} {escape(path)} cannot be read: {os_reason(exc)}") from None


def read_input_text(path: str | os.PathLike, what: str, *, max_bytes: int) -> str:
    """UTF-8 text of a checked input file; a file that is not UTF-8 is a one-line error, not a crash."""
    raw = read_input_bytes(path, what, max_bytes=max_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {escape(path)} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


# ---------------------------------------------------------------- the output directory


def check_output_path(path: str | os.PathLike, what: str = "--out") -> Path:
    """The cheap checks of an output folder (a name the filesystem takes, not a file), made before any work."""
    path = Path(path)
    st = stat_path(path, what)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{what} {escape(path)} exists and is not a directory; choose another path")
    return path


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, what: str = "--out") -> Iterator[Path]:
    """Create `path` (and its parents) now and prove it writable; on failure inside the block, remove whatever
    this call created if it is still empty, so a refused run leaves nothing behind."""
    path = check_output_path(path, what)
    shown = escape(path)
    created: list[Path] = []
    probe = path
    while stat_path(probe, what) is None and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, name = _mkstemp(path)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        _remove_empty(created)
        raise UsageError(f"{what} {shown} cannot be written: {os_reason(exc)}") from None
    try:
        yield path
    except BaseException:
        _remove_empty(created)
        raise


def _mkstemp(directory: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=".robustprune-write-test.", dir=directory)


def _remove_empty(created: list[Path]) -> None:
    for directory in created:  # deepest first
        with contextlib.suppress(OSError):
            directory.rmdir()
