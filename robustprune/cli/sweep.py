"""`robustprune sweep`: train and score a grid of recipes x sparsities x seeds (flags or a TOML file), then
build the report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robustprune.cli.common import Subparsers, add_device_option, add_overwrite_option, add_spec_dir_options
from robustprune.config import CERTIFY_METHODS, SweepSpec, read_sweep_toml
from robustprune.config.eps import eps_argument, eps_grid_argument
from robustprune.errors import UsageError
from robustprune.reporting.sweep_report import build_sweep_report
from robustprune.reporting.sweep_verdicts import pooled_audit, verdict_counts
from robustprune.reporting.view import make_view
from robustprune.results.store import load_sweep
from robustprune.sweep import EXECUTORS, run_sweep
from robustprune.validation import check_int


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("sweep", help="train and score a grid of recipes x sparsities x seeds, then report")
    p.add_argument("--config", help="a sweep TOML file (keys as the options below); options given here override it")
    p.add_argument("--recipes", type=lambda t: tuple(r for r in t.split(",") if r), help="e.g. dense,magnitude,pgd_at")
    p.add_argument("--sparsities", type=_floats, help="e.g. 0,0.5,0.8,0.9")
    p.add_argument("--seeds", type=_ints, help="e.g. 0,1")
    p.add_argument("--dataset")
    p.add_argument("--battery")
    p.add_argument("--head-battery", help="battery for the per-head report of multi-head (DIO) models")
    p.add_argument("--norm", choices=["Linf", "L2"])
    p.add_argument("--eps", type=eps_argument, help="threat model radius in pixel units: 0.031 or 8/255")
    p.add_argument("--n", type=int, help="score the first N test examples in every cell")
    p.add_argument(
        "--eps-grid",
        type=eps_grid_argument,
        metavar="GRID",
        help="also record robust accuracy vs eps per cell from one run of FMN and FAB (upper bounds): 0:0.3:16 or 0,0.05,0.1",
    )
    p.add_argument(
        "--certify",
        choices=CERTIFY_METHODS,
        help="the bracket beside every cell's attacks: crown, exact (Linf), none, or auto (the score's default)",
    )
    p.add_argument("--epochs", type=int, help="override every recipe's epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int, help="torch threads per worker (default 1)")
    p.add_argument("--executor", choices=EXECUTORS.names(), default="inprocess")
    p.add_argument("--workers", type=int, default=2, help="parallel workers for process / local ray")
    p.add_argument("--address", help="Ray cluster address (with --executor ray)")
    p.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="exit (code 2, naming the holder) instead of waiting when another sweep holds the directory",
    )
    p.add_argument("--out", required=True)
    add_overwrite_option(p)
    add_device_option(p)
    p.set_defaults(device=None)  # not given: the sweep file's device, else SweepSpec's ("auto")
    add_spec_dir_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    keys = (
        "recipes",
        "sparsities",
        "seeds",
        "dataset",
        "battery",
        "head_battery",
        "norm",
        "eps",
        "n",
        "epochs",
        "batch_size",
        "threads",
        "device",
        "eps_grid",
        "certify",
    )
    given = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    paths = sweep_job(
        config=args.config,
        options=given,
        out=args.out,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        wait=args.wait,
        overwrite=args.overwrite,
    )
    view = make_view(load_sweep(args.out))  # the cell records alone: the report above is already written
    print(f"evaluation verdicts: {verdict_counts(view)}")
    pooled = pooled_audit(view)
    if pooled:
        print(pooled)
    print(f"HTML report: {Path(paths['html']).resolve()}")
    return 0


def sweep_job(
    *,
    config: str | None,
    options: dict[str, Any],
    out: str,
    executor: str,
    workers: int,
    address: str | None,
    wait: bool = True,
    overwrite: bool = False,
) -> dict[str, str]:
    """Resolve the grid (TOML file, then command-line options), run the missing cells, build the report."""
    values = read_sweep_toml(config) if config else {}
    values |= options
    if "recipes" not in values:
        raise UsageError("the sweep needs recipes: pass --recipes dense,magnitude,... or a --config file")
    check_int(workers, "--workers", bound="workers")
    spec = SweepSpec(**values)
    run_sweep(
        spec, out, executor=executor, workers=workers, address=address, progress=True, wait=wait, overwrite=overwrite
    )
    return build_sweep_report(out)
