"""What every subcommand shares: the one-line-error parser, the thread setting and the exit-code mapping.

Exit codes: 0 ok, 2 bad input (one line on stderr, nothing written), 1 internal error or failed verification.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable

import torch

from robustprune.errors import UsageError, VerificationError
from robustprune.validation import check_int, escape

Subparsers = argparse._SubParsersAction


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and count as bad input (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}; see `{self.prog} --help`")


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(check_int(threads, "--threads", bound="threads"))


def command_line() -> list[str]:
    """What the user typed, recorded in provenance."""
    return ["robustprune", *sys.argv[1:]]


def run(job: Callable[[], int]) -> int:
    """Map exceptions to exit codes and one-line messages; tracebacks only with ROBUSTPRUNE_DEBUG=1."""
    try:
        return job()
    except UsageError as exc:  # escape(): one line whatever user text (a path with a newline) the message echoes
        print(f"robustprune: error: {escape(exc)}", file=sys.stderr)
        return 2
    except VerificationError as exc:
        print(f"robustprune: verification failed: {escape(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("robustprune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence turns any crash into exit 1
        if os.environ.get("ROBUSTPRUNE_DEBUG"):
            traceback.print_exc()
        print(
            f"robustprune: internal error: {type(exc).__name__}: {escape(exc)} "
            "(set ROBUSTPRUNE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
