"""What every subcommand shares: the one-line-error parser, the thread setting and the exit-code mapping.

Exit codes: 0 ok, 2 bad input or user code unusable from the start (one line on stderr, nothing written), 1 user code
that failed during a run, a failed verification or an internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from robustprune.errors import UsageError, UserCodeError, VerificationError, WriteError
from robustprune.validation import check_int, escape

Subparsers = argparse._SubParsersAction


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and count as bad input (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}; see `{self.prog} --help`")


def add_spec_dir_options(p: argparse.ArgumentParser, *, batteries: bool = True, recipes: bool = True) -> None:
    """--battery-dir / --recipe-dir: the user's own directories, looked up before the built-ins (applied by
    `spec_dirs_of` around the subcommand); files elsewhere are used only when named by path."""
    if batteries:
        p.add_argument(
            "--allow-imports",
            action="store_true",
            help="let a battery file name attack classes by import path (package.module:Class): their modules are "
            "imported and run; without it a battery file, being data, imports no code (torchattacks:Name is allowed)",
        )
        p.add_argument(
            "--allow-long",
            action="store_true",
            help="run a battery estimated above 1,000,000 model passes per example, or a sweep of more than 500 cells "
            "(refused without it: usually a typo in a setting)",
        )
        p.add_argument(
            "--battery-dir",
            dest="battery_dirs",
            action="append",
            default=[],
            metavar="DIR",
            help="also look battery names up in DIR, before the built-ins and $ROBUSTPRUNE_BATTERIES (repeatable)",
        )
    if recipes:
        p.add_argument(
            "--recipe-dir",
            dest="recipe_dirs",
            action="append",
            default=[],
            metavar="DIR",
            help="also look recipe names up in DIR, before the built-ins and $ROBUSTPRUNE_RECIPES (repeatable)",
        )


def add_overwrite_option(p: argparse.ArgumentParser) -> None:
    """--overwrite: replace an --out that holds another run's files, whole (robustprune.outputs)."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an --out that already holds another run's files (the new set replaces the old one whole, and "
        "only once it is complete); without it such an --out is refused. A rerun of the same configuration replaces "
        "its own folder without it",
    )


def add_device_option(p: argparse.ArgumentParser) -> None:
    """--device: where models and data run (robustprune.devices.resolve_device checks it)."""
    p.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto (default: cuda if available, else mps, else cpu), cpu, cuda, cuda:N or mps; GPU results may "
        "differ from the CPU's by floating-point rounding (see README, Devices)",
    )


def spec_dirs_of(args: argparse.Namespace) -> AbstractContextManager[None]:
    """The lookup directories a subcommand was given, and whether its battery files may import code
    (--allow-imports), in force while it runs (none given: the built-ins and the environment variables only)."""
    from robustprune.config import allowing_imports, allowing_long, given_spec_dirs

    stack = contextlib.ExitStack()
    stack.enter_context(
        given_spec_dirs(attacks=getattr(args, "battery_dirs", []), defenses=getattr(args, "recipe_dirs", []))
    )
    stack.enter_context(allowing_imports(bool(getattr(args, "allow_imports", False))))
    stack.enter_context(allowing_long(bool(getattr(args, "allow_long", False))))
    return stack


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(check_int(threads, "--threads", bound="threads"))


def command_line() -> list[str]:
    """What the user typed, recorded in provenance."""
    return ["robustprune", *sys.argv[1:]]


def debug_enabled() -> bool:
    """ROBUSTPRUNE_DEBUG read as a boolean: 1, true, yes, on (any case) turn tracebacks on; unset, 0, false, no,
    off and anything else leave them off."""
    return os.environ.get("ROBUSTPRUNE_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


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
    except (UserCodeError, WriteError) as exc:
        print(f"robustprune: error: {escape(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("robustprune: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # user code is caught at the boundary; anything else that exits is reported, not obeyed
        print(f"robustprune: internal error: sys.exit({exc.code!r}) was called during the run", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence turns any crash into exit 1
        if debug_enabled():
            traceback.print_exc()
        print(
            f"robustprune: internal error: {type(exc).__name__}: {escape(exc)} "
            "(set ROBUSTPRUNE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
