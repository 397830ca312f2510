"""`robustprune ls`: what is registered and shipped, and the user's batteries and recipes it would use."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustprune.cli.common import Subparsers, add_spec_dir_options


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("ls", help="list models, attacks, batteries, recipes and datasets")
    add_spec_dir_options(p)
    p.set_defaults(func=run)


def _spec_lines(label: str, dirs: list[Path]) -> list[str]:
    """`label: name, ...` over every directory, then one line per user directory naming what it adds or shadows."""
    from robustprune.config import BUILTIN_DIR, BUILTIN_PREFIX, spec_names

    names = spec_names(dirs)
    lines = [f"{label:<11}" + ", ".join(names)]
    builtin = {p.stem for d in dirs if d.parent == BUILTIN_DIR for p in d.glob("*.toml")}
    for directory in (d for d in dirs if d.parent != BUILTIN_DIR):
        used = [n for n, path in names.items() if path.parent == directory]
        if used:
            shown = (f"{n} (shadows {BUILTIN_PREFIX}{n})" if n in builtin else n for n in used)
            lines.append(f"  from {directory}: " + ", ".join(shown))
    return lines


def run(args: argparse.Namespace) -> int:
    from robustprune.attacks import ATTACKS
    from robustprune.attacks.min_norm import MIN_NORM_ATTACKS
    from robustprune.config import BUILTIN_DIR, battery_dirs
    from robustprune.data import DATA_FORMATS
    from robustprune.defenses.base import recipe_dirs
    from robustprune.models import MODELS

    print("models:    " + ", ".join(MODELS.names()))
    print("attacks:   " + ", ".join(ATTACKS.names()))
    print("min-norm:  " + ", ".join(MIN_NORM_ATTACKS) + "  (eps curves: --eps-grid, [eps_curve] in a battery)")
    named = [n for fmt in DATA_FORMATS.names() for n in DATA_FORMATS.get(fmt).names]
    files = [fmt for fmt in DATA_FORMATS.names() if not DATA_FORMATS.get(fmt).names]
    print("datasets:  " + ", ".join(named) + " (embedded); files: " + ", ".join(files) + " (--dataset PATH)")
    print("\n".join(_spec_lines("batteries:", battery_dirs())))
    print("\n".join(_spec_lines("recipes:", recipe_dirs())))
    print(f"built-in batteries and recipes: {BUILTIN_DIR}")
    return 0
