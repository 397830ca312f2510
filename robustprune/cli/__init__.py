"""Command line: `robustprune score | train | sweep | report | check | demo | ls` (also `python -m robustprune`).

One module per subcommand (each `add_parser` + `run`); exit codes: 0 ok, 2 bad input (one line on stderr, nothing
written), 1 internal error or failed verification.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from robustprune.cli.common import Parser, run, spec_dirs_of

log = logging.getLogger("robustprune")

# Subcommands in the order `--help` lists them; each is loaded only when the parser is built.
SUBCOMMANDS = ("score", "train", "sweep", "report", "check", "demo", "ls")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="robustprune", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    parser.add_argument("--version", action="version", version=_version_text())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in SUBCOMMANDS:
        importlib.import_module(f"robustprune.cli.{name}").add_parser(sub)
    return parser


def _version_text() -> str:
    from robustprune.version import __version__, package_version

    torch_version = package_version("torch") or "not installed"
    return f"robustprune {__version__} (torch {torch_version}, python {sys.version.split()[0]})"


def main(argv: Sequence[str] | None = None) -> int:
    return run(lambda: _dispatch(argv))


def _dispatch(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --version and --help end argparse (its errors are UsageErrors, see Parser)
        return 0 if exc.code in (0, None) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    with spec_dirs_of(args):  # --battery-dir / --recipe-dir, for this command only
        return args.func(args)


__all__ = ["build_parser", "main", "run"]
