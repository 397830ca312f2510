"""`robustprune ls`: what is registered and shipped."""

from __future__ import annotations

import argparse

from robustprune.cli.common import Subparsers


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("ls", help="list models, attacks and batteries")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustprune.attacks import ATTACKS
    from robustprune.config import battery_dirs
    from robustprune.models import MODELS

    print("models:    " + ", ".join(MODELS.names()))
    print("attacks:   " + ", ".join(ATTACKS.names()))
    print("batteries: " + ", ".join(sorted({p.stem for d in battery_dirs() for p in d.glob("*.toml")})))
    return 0
