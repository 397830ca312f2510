"""A run's output folder, written as a unit: the files go into a fresh hidden folder beside `--out`, which is renamed
into place only when every file is written. An interrupt (Ctrl-C, SIGTERM), a full disk or an error leaves the
previous complete set, or nothing: never a new report.md beside an old results.json.

A folder that already holds something is refused unless it holds this same run (the marker file records the run's
kind and key; a rerun of the same configuration replaces it; without a key, any run of the same kind, as the Python
API's save_result) or `--overwrite` says to replace it whole; a folder that holds a file the run reads (a parent
checkpoint) is refused always. Stale hidden folders left by a killed run
are removed by the next run into the same place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from robustprune.errors import UsageError, WriteError
from robustprune.validation import escape, os_reason, stat_path

MARKER = ".robustprune-run.json"  # {"kind": "score", "key": "..."}: which run wrote the folder
_PARTIAL = ".partial-"
_REPLACED = ".replaced-"


@dataclass(frozen=True)
class OutputFolder:
    """Where a run writes (`path`, hidden until complete) and where its files will be (`final`)."""

    path: Path
    final: Path

    def relocated(self, paths: dict[str, str]) -> dict[str, str]:
        """Paths written under `path`, as they will be under `final`."""
        out = {}
        for key, value in paths.items():
            try:
                out[key] = str(self.final / Path(value).relative_to(self.path))
            except ValueError:
                out[key] = value
        return out


def _describe(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return shown or "files"


def _marker(folder: Path) -> dict:
    try:
        found = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except (OSError, ValueError):
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale(out: Path) -> None:
    """Hidden folders a killed run left beside `out` (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}{_PARTIAL}*"):
        pid = stale.name.rsplit(_PARTIAL, 1)[-1].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    for stale in out.parent.glob(f".{out.name}{_REPLACED}*"):
        if out.is_dir():  # the swap finished: the old set is garbage
            shutil.rmtree(stale, ignore_errors=True)


def check_output_folder(
    out: str | os.PathLike,
    *,
    kind: str,
    key: str | None,
    overwrite: bool,
    reads: Iterable[Path] = (),
    what: str = "--out",
) -> Path:
    """Refuse, before anything runs, a `--out` this run may not replace (see the module docstring)."""
    folder = Path(out)
    shown = escape(out)
    found = stat_path(folder, what)  # a name too long, a file in the way, no permission: one line
    if found is not None and not stat.S_ISDIR(found.st_mode):
        raise UsageError(f"{what} {shown} exists and is not a directory; choose another path")
    for read in reads:
        if _inside(read, folder):
            raise UsageError(
                f"{what} {shown} holds {escape(read)}, which this run reads; choose another {what} (it would be "
                "replaced by the run's own files)"
            )
    if folder.is_dir() and any(p.name != MARKER for p in folder.iterdir()):
        marker = _marker(folder)
        same = marker.get("kind") == kind and (key is None or marker.get("key") == key)
        if not same and not overwrite:
            whose = f"another {marker['kind']} run's" if marker.get("kind") else "other"
            raise UsageError(
                f"{what} {shown} already holds {whose} files ({_describe(folder)}); pass --overwrite to replace them "
                f"whole, or choose another {what}"
            )
    return folder


@contextlib.contextmanager
def output_set(
    out: str | os.PathLike,
    *,
    kind: str,
    key: str | None = None,
    overwrite: bool = False,
    reads: Iterable[Path] = (),
    what: str = "--out",
) -> Iterator[OutputFolder]:
    """Write a run's files into the yielded folder's `path`; they appear at `out` together when the block ends
    without an exception (replacing what was there, which check_output_folder allowed)."""
    final = check_output_folder(out, kind=kind, key=key, overwrite=overwrite, reads=reads, what=what)
    created = []
    probe = final.parent
    while stat_path(probe, what) is None and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    partial = final.parent / f".{final.name}{_PARTIAL}{token}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(final)
        partial.mkdir()
    except OSError as exc:
        _remove_empty(created)
        raise UsageError(f"{what} {escape(out)} cannot be written: {os_reason(exc)}") from None
    try:
        try:
            yield OutputFolder(partial, final)
            (partial / MARKER).write_text(json.dumps({"kind": kind, "key": key}) + "\n", encoding="utf-8")
            _swap(partial, final, token)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
                where = escape(exc.filename or partial)
                raise WriteError(
                    f"cannot write {where}: {exc.strerror}; nothing was written to {escape(out)} (what it held before "
                    "is intact)"
                ) from None
            raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        _remove_empty(created)
        raise


def _swap(partial: Path, final: Path, token: str) -> None:
    """Put the new set in place of the old: two renames in one directory (the old set is removed after)."""
    if not final.exists():
        os.rename(partial, final)
        return
    old = final.parent / f".{final.name}{_REPLACED}{token}"
    os.rename(final, old)
    try:
        os.rename(partial, final)
    except BaseException:
        os.rename(old, final)  # put the previous set back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_empty(created: list[Path]) -> None:
    for folder in created:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()
