"""The jobs behind the CLI: resolve and validate every input first, compute, then write (atomically) last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustprune.attacks import check_battery, load_battery
from robustprune.config import canonical_key
from robustprune.data import load_dataset
from robustprune.errors import UsageError
from robustprune.models import build_model, load_checkpoint, resolve_factory, sha256_file
from robustprune.models.checkpoint import inspect_checkpoint
from robustprune.reporting import summary_table
from robustprune.scoring import ScoreResult, score
from robustprune.validation import check_int, check_seed, output_dir


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(check_int(threads, "--threads", bound="threads"))


def score_job(
    *,
    model: str,
    checkpoint: str | None,
    trust: bool,
    dataset: str,
    battery: str,
    norm: str | None,
    eps: float | None,
    n: int | None,
    batch_size: int,
    seed: int,
    threads: int | None,
    out: str | None,
    command: list[str] | None,
    head_battery: str | None = None,
) -> tuple[dict[str, str], str]:
    # Everything is resolved and checked before a model is built: numbers, battery, model name, files, data.
    set_threads(threads)
    check_seed(seed)
    check_int(batch_size, "--batch-size", bound="batch_size")
    spec = load_battery(battery, norm=norm, eps=eps)
    heads = load_battery(head_battery, norm=spec.threat.norm, eps=spec.threat.eps) if head_battery else None
    resolve_factory(model)
    if checkpoint:
        inspect_checkpoint(checkpoint)  # format from the header: a corrupt file fails before a model is built
    data = load_dataset(dataset, split="test").subset(n)
    for battery_spec in (spec, heads):
        if battery_spec is not None:
            check_battery(battery_spec, data.num_classes)
    key = canonical_key(
        {
            "model": model,
            "checkpoint": checkpoint and sha256_file(checkpoint),
            "data": data.fingerprint(),
            "battery": spec.to_dict(),
            "seed": seed,
            "batch_size": batch_size,
            "head_battery": heads and heads.to_dict(),
        }
    )
    with output_dir(out or Path("reports") / f"score-{key}") as out_dir:
        net = build_model(model, data.num_classes, data.input_shape)
        info = None
        if checkpoint:
            net, loaded = load_checkpoint(net, checkpoint, trust=trust)
            info = loaded.to_dict()
        result = score(
            net,
            data,
            spec,
            batch_size=batch_size,
            seed=seed,
            architecture=model,
            checkpoint=info,
            command=command,
            progress=True,
            head_battery=heads,
        )
        return result.save(str(out_dir)), summary_table(result.document)


def train_demo_model(cache_dir: Path, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A digits_cnn trained with plain cross-entropy, cached by the hash of its training configuration."""
    from robustprune.defenses.train_loop import TrainSpec, fit
    from robustprune.models import save_checkpoint

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    spec = TrainSpec(epochs=15, batch_size=64, optimizer="adam", lr=2e-3, weight_decay=0.0, schedule="cosine")
    key = canonical_key({"model": "digits_cnn", "train": spec.to_dict(), "seed": seed, "data": train.fingerprint()})
    path = cache_dir / f"digits_cnn-{key}.safetensors"
    model = build_model("digits_cnn", train.num_classes, train.input_shape)
    if path.exists():
        model, info = load_checkpoint(model, path)
        return model, info.to_dict()
    torch.manual_seed(seed)
    model = build_model("digits_cnn", train.num_classes, train.input_shape)
    log = fit(model, train, test, spec, seed=seed, progress=True)
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


def demo_job(*, out: str, seed: int) -> tuple[dict[str, str], str]:
    check_seed(seed)
    with output_dir(out) as out_dir:
        model, info = train_demo_model(out_dir / "model", seed)
        result: ScoreResult = score(
            model,
            "digits",
            "standard",
            eps=0.1,
            seed=seed,
            architecture="digits_cnn",
            checkpoint=info,
            command=["robustprune", "demo"],
            progress=True,
        )
        return result.save(str(out_dir)), summary_table(result.document)


def sweep_job(
    *,
    config: str | None,
    options: dict[str, Any],
    out: str,
    executor: str,
    workers: int,
    address: str | None,
    wait: bool = True,
) -> dict[str, str]:
    """Resolve the grid (TOML file, then command-line options), run the missing cells, build the report."""
    from robustprune.reporting.sweep_report import build_sweep_report
    from robustprune.sweep import SweepSpec, read_sweep_toml, run_sweep

    values = read_sweep_toml(config) if config else {}
    values |= options
    if "recipes" not in values:
        raise UsageError("the sweep needs recipes: pass --recipes dense,magnitude,... or a --config file")
    check_int(workers, "--workers", bound="workers")
    spec = SweepSpec(**values)
    run_sweep(spec, out, executor=executor, workers=workers, address=address, progress=True, wait=wait)
    return build_sweep_report(out)
