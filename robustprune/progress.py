"""Progress for long runs: a tqdm bar on a terminal; when stderr is not a terminal (a CI log, `nohup`, a pipe), a
plain line at most every `interval` seconds and one at the end, so a long run is never silent until it ends."""

from __future__ import annotations

import sys
import time
from typing import Any

HEARTBEAT_SECONDS = 10.0


class Heartbeat:
    """The tqdm calls robustprune uses (update, close), written as occasional lines on stderr."""

    def __init__(self, total: int, desc: str, unit: str, interval: float = HEARTBEAT_SECONDS) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = 0
        self.started = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def close(self) -> None:
        now = time.monotonic()
        if self.n and (self.last > self.started or now - self.started >= self.interval / 2):
            self._line(now)  # the end of a run that was long enough to be waited on

    def _line(self, now: float) -> None:
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        print(
            f"robustprune: {self.desc}: {self.n}/{self.total} {self.unit}{share}, {now - self.started:.0f} s",
            file=sys.stderr,
            flush=True,
        )


class _Silent:
    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


def progress_bar(total: int, desc: str, unit: str, enabled: bool, *, leave: bool = False) -> Any:
    """A tqdm bar on a terminal, a Heartbeat elsewhere, nothing when not `enabled`."""
    if not enabled:
        return _Silent()
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=leave)
    return Heartbeat(total, desc, unit)
