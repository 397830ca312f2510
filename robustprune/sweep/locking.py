"""Advisory file locks (fcntl.flock) that keep two processes from computing the same thing at once.

A sweep holds `DIR/.robustprune.lock` for its whole life, and each cell `cells/<key>/.lock` while it computes,
so two sweeps into one directory, or two workers of a cluster handed the same cell, never compute a cell twice.
The kernel releases a flock when its holder dies (SIGKILL included), so a lock left by a killed process is never
a dead end: the file still names the old holder, which is reported as stale when the lock is taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from robustprune.errors import UsageError
from robustprune.validation import escape

log = logging.getLogger("robustprune.lock")


def _holder_text(path: Path) -> tuple[str, int | None]:
    """(description, pid) of the process that last wrote the lock file."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "an unknown process", None
    pid = info.get("pid") if isinstance(info.get("pid"), int) else None
    return f"pid {pid} on {info.get('host', '?')} since {info.get('since', '?')}", pid


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def hold(
    path: str | os.PathLike, *, what: str, wait: bool = True, announce: TextIO | None = sys.stderr
) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) inside the block.

    When another process holds it: with `wait`, say so on `announce` and block until it is free; without, raise a
    UsageError naming the holder. Filesystems without flock support (some network mounts) are run unlocked, with
    a warning.
    """
    path = Path(path)
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115  held open for the lock's lifetime
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder, _ = _holder_text(path)
            if not wait:
                raise UsageError(
                    f"{what} {escape(path.parent)} is in use by another robustprune ({holder}); wait for it to "
                    "finish, or drop --no-wait to queue behind it"
                ) from None
            if announce is not None:
                print(f"robustprune: waiting for {what} {escape(path.parent)}, held by {holder}", file=announce)
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError as exc:  # ENOLCK and friends: no locking on this filesystem
            log.warning("cannot lock %s (%s); running without a lock", path, exc)
            yield
            return
        previous, pid = _holder_text(path)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            log.warning("took over the lock %s left by %s, which stopped without releasing it", path, previous)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}))
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()  # an empty file on the next acquisition means this holder let go; a named one, that it died
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
