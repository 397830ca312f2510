"""`robustprune report DIR`: rebuild a sweep's report from its stored results (recomputes nothing)."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustprune.cli.common import Subparsers
from robustprune.reporting.sweep_report import build_sweep_report


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("report", help="rebuild a sweep's report from its stored results (recomputes nothing)")
    p.add_argument("dir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = build_sweep_report(args.dir)
    print(f"HTML report: {Path(paths['html']).resolve()}")
    return 0
