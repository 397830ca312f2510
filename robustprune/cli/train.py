"""`robustprune train`: a recipe, a dataset and a target sparsity (and a parent) -> a checkpoint and its manifest.
Every input is checked before the output directory is created and before anything trains."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustprune.cli.common import (
    Subparsers,
    add_device_option,
    add_overwrite_option,
    add_spec_dir_options,
    command_line,
    set_threads,
)
from robustprune.cli.output import add_output_options, emit
from robustprune.defenses.pipeline import execute, prepare, resolve, save_trained, summary
from robustprune.devices import resolve_device
from robustprune.outputs import output_set
from robustprune.paths import default_train_dir, manifest_path


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("train", help="train (and prune) one model from a defense recipe")
    p.add_argument("--recipe", required=True, help="recipe name (see `robustprune ls`) or a .toml file")
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
    add_device_option(p)
    p.add_argument("--out", help="output directory (default: reports/train-<recipe>-<config hash>)")
    add_overwrite_option(p)
    add_spec_dir_options(p, batteries=False)
    add_output_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths, summary = train_job(
        recipe=args.recipe,
        dataset=args.dataset,
        sparsity=args.sparsity,
        parent=args.parent,
        epochs=args.epochs,
        seed=args.seed,
        overrides=args.overrides,
        out=args.out,
        threads=args.threads,
        command=command_line(),
        progress=not args.quiet,
        device=args.device,
        overwrite=args.overwrite,
    )
    emit(args, summary, train_summary(paths))
    return 0


def train_summary(paths: dict[str, str]) -> dict:
    """The fields of a training run people script against, from the manifest just written."""
    import json

    with open(paths["manifest"], encoding="utf-8") as handle:
        manifest = json.load(handle)
    final = manifest.get("final") or {}
    return {
        "kind": "robustprune.train.summary",
        "recipe": manifest["recipe"]["name"],
        "defense": manifest["defense"],
        "architecture": manifest["architecture"],
        "seed": manifest["seed"],
        "sparsity": {
            "target": manifest["sparsity"]["target"],
            "achieved": manifest["sparsity"]["achieved"],
            "target_unit": manifest["sparsity"].get("target_unit", "weights"),
            "channels": (manifest["sparsity"].get("channels") or {}).get("sparsity"),
        },
        "val_acc": final.get("val_acc"),
        "pgd_acc": final.get("pgd_acc"),
        "dead_relu_rate": final.get("dead_relu_rate"),
        "dead_relu_rate_train": final.get("dead_relu_rate_train"),
        "epochs": len(manifest["log"]),
        "train_seconds": manifest["train_seconds"],
        "files": paths,
    }


def train_job(
    *,
    recipe: str,
    dataset: str = "digits",
    sparsity: float = 0.0,
    parent: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | None = None,
    threads: int | None = None,
    command: list[str] | None = None,
    progress: bool = True,
    device: str | None = "auto",
    overwrite: bool = False,
) -> tuple[dict[str, str], str]:
    """The CLI's `train`: validate everything, create the output directory, train, then write
    DIR/model.safetensors + its manifest."""
    set_threads(threads)
    device = resolve_device(device)
    inputs = resolve(
        recipe, dataset=dataset, sparsity=sparsity, parent=parent, seed=seed, epochs=epochs, overrides=overrides
    )
    key = inputs.key()
    reads = [Path(parent)] if parent else []
    with output_set(
        out or default_train_dir(inputs.recipe.name, key), kind="train", key=key, overwrite=overwrite, reads=reads
    ) as folder:
        artifact, manifest = execute(prepare(inputs), progress=progress, command=command, device=device)
        info = save_trained(artifact, manifest, folder.path)
    paths = folder.relocated({"checkpoint": info.path, "manifest": str(manifest_path(info.path))})
    text = summary(manifest) + f"\ncheckpoint: {paths['checkpoint']}\nmanifest:   {paths['manifest']}"
    return paths, text
