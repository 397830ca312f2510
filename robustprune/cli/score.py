"""`robustprune score`: one model against one battery; resolve and check every input, then create the output
directory, then build the model and score it; results.json is written last."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from torch import nn

from robustprune.attacks import check_battery, load_battery
from robustprune.cli.common import (
    Subparsers,
    add_device_option,
    add_overwrite_option,
    add_spec_dir_options,
    command_line,
    set_threads,
)
from robustprune.cli.output import add_output_options, emit, score_summary
from robustprune.config import CERTIFY_METHODS, CertifySpec, canonical_key
from robustprune.config.eps import DEFAULTS_HELP, check_grid_fits, default_eps, eps_argument, eps_grid_argument
from robustprune.data import Dataset, load_dataset
from robustprune.devices import resolve_device
from robustprune.errors import UsageError
from robustprune.models import build_model, load_checkpoint, resolve_factory, sha256_file
from robustprune.models.checkpoint import inspect_checkpoint
from robustprune.outputs import output_set
from robustprune.paths import default_score_dir
from robustprune.render import summary_table
from robustprune.results.io import write_result_files
from robustprune.scoring import score
from robustprune.scoring.result import AdversarialExamples, ScoreResult
from robustprune.validation import check_int, check_seed, escape


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser("score", help="score one model against one battery")
    p.add_argument("--model", required=True, help="registry name (see `robustprune ls`) or package.module:factory")
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an argument for the model factory (value read as TOML, bare words as text); repeatable",
    )
    p.add_argument("--checkpoint", help="weights: .safetensors or a state_dict saved with torch.save")
    p.add_argument(
        "--random-init",
        action="store_true",
        help="score a registry model's random initialisation on purpose (without it, a registry model needs "
        "--checkpoint; ignored when --checkpoint is given)",
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow --checkpoint to be a pickled module, TorchScript or .pt2 (they can run code when loaded); it "
        "applies to that file only, never to a file another file names",
    )
    p.add_argument(
        "--trust-parent",
        action="store_true",
        help="the same for the file --parent names (a parent a train manifest names is never trusted)",
    )
    p.add_argument("--dataset", default="digits", help="digits (default) or a path: .npz, MNIST IDX, CIFAR batches")
    p.add_argument(
        "--battery", default="fast", help="fast (default) | quick | standard | autoattack | full | FILE.toml"
    )
    p.add_argument(
        "--head-battery", help="multi-head (DIO) models: battery for the per-head report (default: --battery)"
    )
    p.add_argument("--norm", choices=["Linf", "L2"], help="threat model norm (default: the battery's)")
    p.add_argument(
        "--eps",
        type=eps_argument,
        help=f"threat model radius in pixel units of [0,1] inputs: 0.031 or 8/255 ({DEFAULTS_HELP}; a battery file "
        "of your own uses its own eps)",
    )
    p.add_argument("--n", type=int, help="score the first N test examples (default: all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_device_option(p)
    p.add_argument("--out", help="output directory (default: reports/score-<config hash>)")
    add_overwrite_option(p)
    p.add_argument(
        "--parent",
        help="the dense checkpoint this model was pruned from (same architecture): adversarial examples crafted on "
        "it are tried on this model (S9); default: the parent the checkpoint's train manifest names, if present",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when the verdict is untrusted, or when the exact search broke examples the battery missed (the "
        "results are still written)",
    )
    add_spec_dir_options(p, recipes=False)
    p.add_argument(
        "--save-adversarial",
        action="store_true",
        help="also write adversarial.npz: every example an attack broke (x_adv, x_clean, index, label, adv_pred, "
        "attack), each verified inside the threat model",
    )
    p.add_argument(
        "--eps-grid",
        type=eps_grid_argument,
        metavar="GRID",
        help="also report robust accuracy vs eps from one run of the minimum-norm attacks FMN and FAB, merged with "
        "the battery's points (upper bounds), in the battery's norm: start:stop:points (inclusive, evenly spaced, "
        "e.g. 0:0.3:16) or a comma list (0,0.05,0.1); replaces the grid of a battery's [eps_curve] table",
    )
    add_certify_options(p)
    add_output_options(p)
    p.set_defaults(func=run)


def add_certify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--certify",
        choices=CERTIFY_METHODS,
        default="auto",
        help="the bracket beside the attacks: crown (certified lower bound), exact (CROWN, then the big-M MILP on "
        "what is left: exact robust accuracy where it finishes; Linf), none; auto (default): crown where the "
        "verifier supports the model and it is small",
    )
    p.add_argument(
        "--exact-time-limit", type=float, default=10.0, metavar="SECONDS", help="MILP seconds per example (default 10)"
    )
    p.add_argument(
        "--exact-budget",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="MILP seconds in all (default 600); examples not reached stay unknown",
    )
    p.add_argument(
        "--max-gap",
        type=float,
        metavar="POINTS",
        help="a bracket (attacked minus certified robust accuracy) wider than this makes the verdict caution",
    )


def certify_spec(args: argparse.Namespace) -> CertifySpec:
    return CertifySpec(
        method=args.certify,
        exact_time_limit=args.exact_time_limit,
        exact_budget=args.exact_budget,
        max_gap=args.max_gap,
    )


def run(args: argparse.Namespace) -> int:
    paths, summary, result = score_job(
        model=args.model,
        model_args=parse_model_args(args.model_arg),
        checkpoint=args.checkpoint,
        random_init=args.random_init,
        trust=args.trust_checkpoint,
        trust_parent=args.trust_parent,
        overwrite=args.overwrite,
        dataset=args.dataset,
        battery=args.battery,
        norm=args.norm,
        eps=args.eps,
        n=args.n,
        batch_size=args.batch_size,
        seed=args.seed,
        threads=args.threads,
        out=args.out,
        command=command_line(),
        head_battery=args.head_battery,
        parent=args.parent,
        progress=not args.quiet,
        save_adversarial=args.save_adversarial,
        device=args.device,
        eps_grid=args.eps_grid,
        certify=certify_spec(args),
    )
    text = f"{summary}\nresults: {paths['results']}\nreport:  {paths.get('html', paths['markdown'])}"
    if "adversarial" in paths:
        text += f"\nadversarial examples: {paths['adversarial']}"
    emit(args, text, score_summary(paths["results"], paths))
    if args.strict and result.verdict == "untrusted":
        print("robustprune: --strict: the verdict is untrusted (see the health checks)", file=sys.stderr)
        return 1
    if args.strict and result.bounds is not None and result.bounds.exact_breaks:
        print(
            "robustprune: --strict: the exact search broke examples every attack had left (S25): the battery is too "
            "weak for this model",
            file=sys.stderr,
        )
        return 1
    return 0


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
    parent: str | None = None,
    model_args: dict[str, Any] | None = None,
    random_init: bool = False,
    progress: bool = True,
    save_adversarial: bool = False,
    device: str | None = "auto",
    eps_grid: list[float] | None = None,
    trust_parent: bool = False,
    overwrite: bool = False,
    certify: CertifySpec | None = None,
) -> tuple[dict[str, str], str, ScoreResult]:
    """Score one model from the command line's inputs; returns (paths written, summary, the result)."""
    # Everything is resolved and checked before a model is built: numbers, battery, model name, files, data.
    set_threads(threads)
    check_seed(seed)
    check_int(batch_size, "--batch-size", bound="batch_size")
    device = resolve_device(device)
    certify = certify or CertifySpec()
    spec = load_battery(battery, norm=norm, eps=eps)
    heads = load_battery(head_battery, norm=spec.threat.norm, eps=spec.threat.eps) if head_battery else None
    resolve_factory(model)
    if not checkpoint and not random_init and ":" not in model:
        # a registry name builds untrained weights; a user's factory (package.module:factory) may load its own
        raise UsageError(
            f"--model {model} has no --checkpoint, so its weights would be a random initialisation: pass "
            "--checkpoint FILE, or --random-init to score the untrained model on purpose"
        )
    if checkpoint:
        inspect_checkpoint(checkpoint)  # format from the header: a corrupt file fails before a model is built
    if trust_parent and not parent:
        raise UsageError("--trust-parent needs --parent FILE: it applies only to a parent you name")
    if parent:
        try:
            inspect_checkpoint(parent)
        except UsageError as err:
            raise UsageError(f"--parent: {err}") from None
    full = load_dataset(dataset, split="test")  # scored as its first n; S19 compares a manifest on the whole
    data = full.subset(n)
    model_args = data_model_args(model_args or {}, data)
    if eps is None and spec.source.startswith("builtin:"):  # the dataset's usual eps (config.eps.DATASET_EPS)
        eps = default_eps(full.input_shape, spec.threat.norm)
        spec = load_battery(battery, norm=norm, eps=eps)
        heads = load_battery(head_battery, norm=spec.threat.norm, eps=eps) if head_battery else None
    for battery_spec in (spec, heads):
        if battery_spec is not None:
            check_battery(battery_spec, data.num_classes)
            battery_spec.threat.check_input_dim(int(math.prod(data.input_shape)))
    grid = eps_grid if eps_grid is not None else (spec.eps_curve.grid if spec.eps_curve is not None else None)
    if grid is not None:  # before any model is built: a bad grid is bad input
        check_grid_fits(list(grid), spec.threat.norm, int(math.prod(data.input_shape)))
    key = canonical_key(
        {
            "model": model,
            "checkpoint": checkpoint and sha256_file(checkpoint),
            "data": data.fingerprint(),
            "battery": spec.to_dict(),
            "seed": seed,
            "batch_size": batch_size,
            "head_battery": heads and heads.to_dict(),
            "parent": parent and sha256_file(parent),
            **({"model_args": key_safe(model_args)} if model_args else {}),
            **({"eps_grid": eps_grid} if eps_grid is not None else {}),
            **({"certify": certify.to_dict()} if certify != CertifySpec() else {}),
        }
    )
    reads = [Path(p) for p in (checkpoint, parent) if p]
    with output_set(out or default_score_dir(key), kind="score", key=key, overwrite=overwrite, reads=reads) as folder:
        out_dir = folder.path
        net = build_model(model, data.num_classes, data.input_shape, **(model_args or {}))
        info = None
        if checkpoint:
            net, loaded = load_checkpoint(net, checkpoint, trust=trust)
            info = loaded.to_dict()
        if parent:
            parent_net = _load_parent(parent, model, data, trust_parent, model_args)
        else:
            parent_net = _manifest_parent_model(info, model, data, model_args)
        for note in (info or {}).get("notes") or []:
            print(f"robustprune: note: {note}", file=sys.stderr)
        result = score(
            net,
            full,
            spec,
            n=n,
            batch_size=batch_size,
            seed=seed,
            architecture=model,
            checkpoint=info,
            command=command,
            progress=progress,
            head_battery=heads,
            parent=parent_net,
            device=device,
            eps_grid=eps_grid,
            certify=certify,
        )
        paths = write_result_files(result, out_dir)
        if save_adversarial and result.adversarial is not None:
            paths["adversarial"] = save_adversarial_npz(result.adversarial, out_dir)
    return folder.relocated(paths), summary_table(result), result


def _manifest_parent_model(
    info: dict | None, model: str, data: Dataset, model_args: dict[str, Any] | None
) -> nn.Module | None:
    """The parent a proven train manifest names, loaded without trust: a file the user did not name never runs
    code. One that cannot be loaded that way is left out, with a note (pass it as --parent to use it)."""
    path = _manifest_parent(info)
    if path is None:
        return None
    try:
        return _load_parent(path, model, data, False, model_args, flag="the parent the manifest names")
    except UsageError as err:
        note = (
            f"the parent the checkpoint's manifest names ({escape(path)}) was not loaded ({err}); to use it, pass "
            "it as --parent (with --trust-parent if it is a pickle you trust)"
        )
        info.setdefault("notes", []).append(note)  # type: ignore[union-attr]
        return None


def _manifest_parent(info: dict | None) -> str | None:
    """The parent checkpoint a train manifest names, if it is still where it was and still the same file."""
    record = ((info or {}).get("manifest") or {}).get("parent")
    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        return None
    path = Path(record["path"])
    if not path.is_file() or sha256_file(path) != record.get("sha256"):
        return None
    return str(path)


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """`--model-arg depth=18 --model-arg width=0.5` -> {"depth": 18, "width": 0.5} (values read as TOML literals)."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-arg {item!r} must look like key=value, e.g. --model-arg width=64")
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
    return out


def data_model_args(model_args: dict[str, Any], data: Dataset) -> dict[str, Any]:
    """--model-arg values the data decides: num_classes and input_shape may be repeated, not contradicted (the data
    passes them to the factory anyway); every other argument goes to the factory as given."""
    out = dict(model_args)
    for key, value in (("num_classes", data.num_classes), ("input_shape", tuple(data.input_shape))):
        if key not in out:
            continue
        given = out.pop(key)
        same = tuple(given) == value if isinstance(given, list | tuple) else given == value
        if not same:
            raise UsageError(
                f"--model-arg {key}={given!r} contradicts the data ({key} {value!r}); leave it out, robustprune passes "
                f"the data's {key} to the factory"
            )
    return out


def key_safe(value: Any) -> Any:
    """A value for the run's key: non-finite floats (--model-arg clip=inf) as text, which JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: key_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [key_safe(v) for v in value]
    return value


def save_adversarial_npz(examples: AdversarialExamples, out_dir: Path) -> str:
    """Write the broken examples as adversarial.npz (atomically; numpy.load(..., allow_pickle=False) reads it)."""
    import io

    import numpy as np

    from robustprune.atomic import write_bytes

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **examples.arrays())
    return str(write_bytes(out_dir / "adversarial.npz", buffer.getvalue()))


def _load_parent(
    path: str | None,
    model: str,
    data: Dataset,
    trust: bool,
    model_args: dict[str, Any] | None = None,
    flag: str = "--parent",
) -> nn.Module | None:
    if path is None:
        return None
    try:
        shell = build_model(model, data.num_classes, data.input_shape, **(model_args or {}))
        parent, _ = load_checkpoint(shell, path, trust=trust, trust_flag="--trust-parent")
    except UsageError as err:
        raise UsageError(f"{flag}: {err}") from None
    return parent
