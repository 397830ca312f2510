"""The jobs behind the CLI: resolve and validate every input first, compute, then write (atomically) last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustprune.config import canonical_key, load_battery
from robustprune.data import load_dataset
from robustprune.errors import UsageError
from robustprune.models import build_model, load_checkpoint
from robustprune.reporting import summary_table
from robustprune.scoring import ScoreResult, score


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def check_out_dir(out: str | Path) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory; choose another path")
    return path


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
    set_threads(threads)
    spec = load_battery(battery, norm=norm, eps=eps)
    data = load_dataset(dataset, split="test").subset(n)
    net = build_model(model, data.num_classes, data.input_shape)
    info = None
    if checkpoint:
        net, loaded = load_checkpoint(net, checkpoint, trust=trust)
        info = loaded.to_dict()
    heads = load_battery(head_battery, norm=spec.threat.norm, eps=spec.threat.eps) if head_battery else None
    key = canonical_key(
        {
            "model": model,
            "checkpoint": info and info["sha256"],
            "data": data.fingerprint(),
            "battery": spec.to_dict(),
            "seed": seed,
            "batch_size": batch_size,
            "head_battery": heads and heads.to_dict(),
        }
    )
    out_dir = check_out_dir(out or Path("reports") / f"score-{key}")
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
    out_dir = check_out_dir(out)
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
    *, config: str | None, options: dict[str, Any], out: str, executor: str, workers: int, address: str | None
) -> dict[str, str]:
    """Resolve the grid (TOML file, then command-line options), run the missing cells, build the report."""
    from robustprune.reporting.sweep_report import build_sweep_report
    from robustprune.sweep import SweepSpec, read_sweep_toml, run_sweep

    values = read_sweep_toml(config) if config else {}
    values |= options
    if "recipes" not in values:
        raise UsageError("the sweep needs recipes: pass --recipes dense,magnitude,... or a --config file")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    spec = SweepSpec(**values)
    check_out_dir(out)
    run_sweep(spec, out, executor=executor, workers=workers, address=address, progress=True)
    return build_sweep_report(out)
