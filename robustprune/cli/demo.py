"""`robustprune demo`: train a small CNN on digits (cached by the hash of its training configuration) and score it
with the fast battery (audited by the reference AutoAttack)."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from robustprune.cli.common import Subparsers, add_device_option, add_overwrite_option, add_spec_dir_options
from robustprune.config import canonical_key
from robustprune.data import load_dataset
from robustprune.devices import resolve_device
from robustprune.models import build_model, load_checkpoint
from robustprune.outputs import output_set
from robustprune.paths import manifest_path
from robustprune.render import summary_table
from robustprune.results.io import write_result_files
from robustprune.scoring import ScoreResult, score
from robustprune.validation import check_seed


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="train a small CNN on digits (cached) and score it with the fast battery")
    p.add_argument("--out", default="reports/demo")
    add_overwrite_option(p)
    p.add_argument("--seed", type=int, default=0)
    add_device_option(p)
    add_spec_dir_options(p, recipes=False)  # the fast battery by name
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths, summary = demo_job(out=args.out, seed=args.seed, device=args.device, overwrite=args.overwrite)
    print(summary)
    print(f"\nHTML report: {Path(paths['html']).resolve()}")
    return 0


def train_demo_model(
    cache_dir: Path, seed: int, device: torch.device | None = None, previous: Path | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A digits_cnn trained with plain cross-entropy (on `device`, default the CPU), cached by the hash of its
    training configuration (the device is not part of it); the model comes back on the CPU."""
    from robustprune.defenses.train_loop import TrainSpec, fit
    from robustprune.models import save_checkpoint

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    spec = TrainSpec(epochs=15, batch_size=64, optimizer="adam", lr=2e-3, weight_decay=0.0, schedule="cosine")
    key = canonical_key({"model": "digits_cnn", "train": spec.to_dict(), "seed": seed, "data": train.fingerprint()})
    path = cache_dir / f"digits_cnn-{key}.safetensors"
    model = build_model("digits_cnn", train.num_classes, train.input_shape)
    cached = previous / path.name if previous is not None else None
    if cached is not None and cached.is_file() and not path.exists():  # the last demo's model, still valid
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cached, path)
        if manifest_path(cached).is_file():
            shutil.copy2(manifest_path(cached), manifest_path(path))
    if path.exists():
        model, info = load_checkpoint(model, path)
        return model, info.to_dict()
    torch.manual_seed(seed)
    model = build_model("digits_cnn", train.num_classes, train.input_shape)
    if device is not None:
        model.to(device)
        train, test = (replace(d, x=d.x.to(device), y=d.y.to(device)) for d in (train, test))
    log = fit(model, train, test, spec, seed=seed, progress=True)
    model.to("cpu")
    info = save_checkpoint(
        model,
        path,
        manifest={
            "architecture": "digits_cnn",
            "recipe": "dense (demo)",
            "train": spec.to_dict(),
            "seed": seed,
            "log": log,
        },
    )
    return model, info.to_dict()


def demo_job(
    *, out: str, seed: int, device: str | None = "auto", overwrite: bool = False
) -> tuple[dict[str, str], str]:
    check_seed(seed)
    resolved = resolve_device(device)
    with output_set(out, kind="demo", key=f"seed={seed}", overwrite=overwrite) as folder:
        out_dir = folder.path
        model, info = train_demo_model(out_dir / "model", seed, resolved, previous=folder.final / "model")
        info["path"] = folder.relocated({"checkpoint": info["path"]})["checkpoint"]  # where it will be
        result: ScoreResult = score(
            model,
            "digits",
            "fast",
            eps=0.1,
            seed=seed,
            architecture="digits_cnn",
            checkpoint=info,
            command=["robustprune", "demo"],
            progress=True,
            device=resolved,
        )
        paths = write_result_files(result, out_dir)
    return folder.relocated(paths), summary_table(result)
