"""`robustprune check RESULTS --baseline BASELINE`: exit 1 when robustness dropped by more than chance explains."""

from __future__ import annotations

import argparse

from robustprune.check import rule as r
from robustprune.cli.common import Subparsers


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("check", help="compare results with a baseline; exit 1 if robustness dropped beyond chance")
    p.add_argument("results", help="a sweep directory, a score directory or a results.json")
    p.add_argument("--baseline", required=True)
    p.add_argument(
        "--tolerance", type=float, default=r.TOLERANCE, help="allowed drop in accuracy points (default %(default)s)"
    )
    p.add_argument("--alpha", type=float, default=r.ALPHA, help="significance of the paired test (default %(default)s)")
    p.add_argument(
        "--calibration-tolerance",
        type=float,
        default=r.CALIBRATION_TOLERANCE,
        help="allowed rise in ECE (default %(default)s)",
    )
    p.add_argument(
        "--nll-tolerance", type=float, default=r.NLL_TOLERANCE, help="allowed rise in NLL (default %(default)s)"
    )
    p.add_argument("--allow-missing", action="store_true", help="baseline cells absent from the results do not fail")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustprune.check.compare import check_main  # numpy and scipy only when it runs

    return check_main(
        args.results,
        args.baseline,
        tolerance=args.tolerance,
        alpha=args.alpha,
        calibration_tolerance=args.calibration_tolerance,
        nll_tolerance=args.nll_tolerance,
        allow_missing=args.allow_missing,
    )
