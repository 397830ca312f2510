"""Cost of one training epoch of each defense relative to plain training (the `dense` recipe), side by side.

Every recipe trains the same architecture on the same data through the shared loop; runs are interleaved
(round-robin, after one warm-up run each) so that machine noise hits all of them alike. Two timings per epoch come
from the training log: `train_seconds` (the optimisation steps only, where the defenses differ) and `seconds` (the
whole epoch including the per-epoch accuracy / PGD-probe / dead-neuron measurements, the same for every recipe).
Prints a table of medians and ratios; no assertions.

    .venv/bin/python bench/defense_epoch_cost.py [--repeats 2] [--epochs N] [--threads 1] [--recipes a b ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustprune.defenses.base import load_recipe, recipe_dirs
from robustprune.defenses.pipeline import execute, prepare

BASELINE = "dense"
DEFAULT = ["dense", "pgd_at", "trades", "fgsm_rs", "magnitude_agp", "magnitude_one_cycle"]


def _no_parent_recipes() -> list[str]:
    """Every recipe that trains without a parent (so DIO / Deadwooding join the table when present)."""
    names = []
    for directory in recipe_dirs():
        for path in sorted(directory.glob("*.toml")):
            try:
                if not load_recipe(str(path)).needs_parent and path.stem not in names:
                    names.append(path.stem)
            except Exception as err:  # noqa: BLE001  a broken recipe is reported, not fatal
                print(f"skipping {path.stem}: {err}")
    return names


def _run(name: str, epochs: int | None, sparsity: float, seed: int) -> list[dict]:
    plan = prepare(name, sparsity=sparsity if load_recipe(name).pruning is not None else 0.0, seed=seed, epochs=epochs)
    _, manifest = execute(plan)
    return manifest["log"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes",
        nargs="*",
        help=f"recipes to time (default: {' '.join(DEFAULT)} and every other recipe that needs no parent)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="epochs per run (default: each recipe's own, so that gradual "
        "pruning updates its masks as often as it does in a real run)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per recipe (default 2)")
    parser.add_argument("--sparsity", type=float, default=0.8, help="target for recipes with a [pruning] table")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.recipes or list(dict.fromkeys([*DEFAULT, *_no_parent_recipes()]))
    if BASELINE not in names:
        names.insert(0, BASELINE)

    train_s: dict[str, list[float]] = {n: [] for n in names}
    epoch_s: dict[str, list[float]] = {n: [] for n in names}
    errors: dict[str, str] = {}
    started = time.perf_counter()
    for name in names:  # warm-up: imports, allocator, first-call overheads
        try:
            _run(name, 1, args.sparsity, seed=0)
        except Exception as err:  # noqa: BLE001  report the failure in the table and keep going
            errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    for rep in range(args.repeats):
        for name in names:
            if name in errors:
                continue
            for entry in _run(name, args.epochs, args.sparsity, seed=rep):
                train_s[name].append(entry["train_seconds"])
                epoch_s[name].append(entry["seconds"])

    train = load_recipe(BASELINE)
    from robustprune.data import load_dataset

    data = load_dataset("digits", "train")
    steps = -(-len(data) // train.train.batch_size)
    print(
        f"defense epoch cost: {train.architecture} on digits ({len(data)} train examples, batch "
        f"{train.train.batch_size}, {steps} steps/epoch), {args.threads} thread(s), torch {torch.__version__}"
    )
    per_run = f"{args.epochs} epochs" if args.epochs else "each recipe's own epochs"
    print(
        f"median over {args.repeats} runs x {per_run}; ratio = median / median of `{BASELINE}`; "
        f"pruning recipes at sparsity {args.sparsity}"
    )
    print()
    base_train = statistics.median(train_s[BASELINE])
    base_epoch = statistics.median(epoch_s[BASELINE])
    header = f"{'recipe':<22} {'defense':<12} {'train s/epoch':>13} {'ratio':>6} {'epoch s (+probes)':>18} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for name in names:
        defense = load_recipe(name).defense
        if name in errors:
            print(f"{name:<22} {defense:<12} error: {errors[name]}")
            continue
        t, e = statistics.median(train_s[name]), statistics.median(epoch_s[name])
        print(f"{name:<22} {defense:<12} {t:>13.3f} {t / base_train:>6.2f} {e:>18.3f} {e / base_epoch:>6.2f}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
