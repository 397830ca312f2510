"""Command line: `robustprune score | train | sweep | report | check | demo | ls` (also `python -m robustprune`).

Exit codes: 0 ok, 2 bad input (one line on stderr, nothing written), 1 internal error or failed verification.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from robustprune.errors import UsageError, VerificationError
from robustprune.validation import escape

log = logging.getLogger("robustprune")


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and count as bad input (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score one model against one battery")
    p.add_argument("--model", required=True, help="registry name (see `robustprune ls`) or package.module:factory")
    p.add_argument("--checkpoint", help="weights: .safetensors or a state_dict saved with torch.save")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow pickled modules, TorchScript and .pt2 (they can run code when loaded)",
    )
    p.add_argument("--dataset", default="digits", help="digits (default) or a path: .npz, MNIST IDX, CIFAR batches")
    p.add_argument("--battery", default="standard", help="quick | standard | autoattack | full | FILE.toml")
    p.add_argument(
        "--head-battery", help="multi-head (DIO) models: battery for the per-head report (default: --battery)"
    )
    p.add_argument("--norm", choices=["Linf", "L2"], help="threat model norm (default: the battery's)")
    p.add_argument("--eps", type=float, help="threat model radius in pixel units of [0,1] inputs")
    p.add_argument("--n", type=int, help="score the first N test examples (default: all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", help="output directory (default: reports/score-<config hash>)")
    p.set_defaults(func=cmd_score)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (and prune) one model from a defense recipe")
    p.add_argument("--recipe", required=True, help="recipe name (see defenses/) or a .toml file")
    p.add_argument("--dataset", default="digits", help="digits (default) or a path: train split trains, test validates")
    p.add_argument("--sparsity", type=float, default=0.0, help="target sparsity in [0, 1) (default 0: dense)")
    p.add_argument("--parent", help="checkpoint to start from / prune (required by recipes with needs_parent)")
    p.add_argument("--epochs", type=int, help="override the recipe's train.epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value, e.g. --set settings.eps=0.2 --set train.lr=0.01 (repeatable)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", help="output directory (default: reports/train-<recipe>-<config hash>)")
    p.set_defaults(func=cmd_train)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small CNN on digits (cached) and score it with the standard battery")
    p.add_argument("--out", default="reports/demo")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


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


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train and score a grid of recipes x sparsities x seeds, then report")
    p.add_argument("--config", help="a sweep TOML file (keys as the options below); options given here override it")
    p.add_argument("--recipes", type=lambda t: tuple(r for r in t.split(",") if r), help="e.g. dense,magnitude,pgd_at")
    p.add_argument("--sparsities", type=_floats, help="e.g. 0,0.5,0.8,0.9")
    p.add_argument("--seeds", type=_ints, help="e.g. 0,1")
    p.add_argument("--dataset")
    p.add_argument("--battery")
    p.add_argument("--head-battery", help="battery for the per-head report of multi-head (DIO) models")
    p.add_argument("--norm", choices=["Linf", "L2"])
    p.add_argument("--eps", type=float)
    p.add_argument("--n", type=int, help="score the first N test examples in every cell")
    p.add_argument("--epochs", type=int, help="override every recipe's epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int, help="torch threads per worker (default 1)")
    p.add_argument("--executor", choices=["inprocess", "process", "ray"], default="inprocess")
    p.add_argument("--workers", type=int, default=2, help="parallel workers for process / local ray")
    p.add_argument("--address", help="Ray cluster address (with --executor ray)")
    p.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="exit (code 2, naming the holder) instead of waiting when another sweep holds the directory",
    )
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_sweep)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild a sweep's report from its stored results (recomputes nothing)")
    p.add_argument("dir")
    p.set_defaults(func=cmd_report)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="compare results with a baseline; exit 1 if robustness dropped beyond chance")
    p.add_argument("results", help="a sweep directory, a score directory or a results.json")
    p.add_argument("--baseline", required=True)
    from robustprune import check_rule as r  # constants only: the parser stays light

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
    p.set_defaults(func=cmd_check)


def _add_ls(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ls", help="list models, attacks and batteries")
    p.set_defaults(func=cmd_ls)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="robustprune", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_score, _add_train, _add_sweep, _add_report, _add_check, _add_demo, _add_ls):
        add(sub)
    return parser


def cmd_score(args: argparse.Namespace) -> int:
    from robustprune.jobs import score_job

    paths, summary = score_job(
        model=args.model,
        checkpoint=args.checkpoint,
        trust=args.trust_checkpoint,
        dataset=args.dataset,
        battery=args.battery,
        norm=args.norm,
        eps=args.eps,
        n=args.n,
        batch_size=args.batch_size,
        seed=args.seed,
        threads=args.threads,
        out=args.out,
        command=["robustprune", *sys.argv[1:]],
        head_battery=args.head_battery,
    )
    print(summary)
    print(f"\nresults: {paths['results']}\nreport:  {paths.get('html', paths['markdown'])}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from robustprune.defenses.pipeline import train_job

    _, summary = train_job(
        recipe=args.recipe,
        dataset=args.dataset,
        sparsity=args.sparsity,
        parent=args.parent,
        epochs=args.epochs,
        seed=args.seed,
        overrides=args.overrides,
        out=args.out,
        threads=args.threads,
        command=["robustprune", *sys.argv[1:]],
    )
    print(summary)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from robustprune.jobs import demo_job

    paths, summary = demo_job(out=args.out, seed=args.seed)
    print(summary)
    print(f"\nHTML report: {Path(paths['html']).resolve()}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from robustprune.jobs import sweep_job

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
    )
    print(f"HTML report: {Path(paths['html']).resolve()}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from robustprune.reporting.sweep_report import build_sweep_report

    paths = build_sweep_report(args.dir)
    print(f"HTML report: {Path(paths['html']).resolve()}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from robustprune.regression import check_main

    return check_main(
        args.results,
        args.baseline,
        tolerance=args.tolerance,
        alpha=args.alpha,
        calibration_tolerance=args.calibration_tolerance,
        nll_tolerance=args.nll_tolerance,
        allow_missing=args.allow_missing,
    )


def cmd_ls(args: argparse.Namespace) -> int:
    from robustprune.attacks import ATTACKS
    from robustprune.config import battery_dirs
    from robustprune.models import MODELS

    print("models:    " + ", ".join(MODELS.names()))
    print("attacks:   " + ", ".join(ATTACKS.names()))
    print("batteries: " + ", ".join(sorted({p.stem for d in battery_dirs() for p in d.glob("*.toml")})))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(lambda: _dispatch(argv))


def _dispatch(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)


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
