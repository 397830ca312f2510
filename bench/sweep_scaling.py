"""Cells per minute of the sweep executors, side by side in one run, on the same small grid.

Runs one grid (dense parents, then magnitude-pruned children, several seeds; every cell one thread) three times
into fresh directories: in-process (sequential), the process pool with `--workers` workers and Ray with as many
CPUs, and prints each one's cells per minute and its ratio to the sequential rate. The target where k cores are
free: k workers >= 0.8 k times the sequential rate. Each executor's wall time includes its own start-up (pool
spawn, Ray start), as a user pays it; the cells' per-sample results are compared so a faster executor cannot be a
different computation. No assertions (timings are not tests).

    .venv/bin/python bench/sweep_scaling.py [--workers 2] [--seeds 4] [--epochs 2] [--n 60] [--skip-ray]

About 10 minutes on 2 cores with the defaults (16 cells, three times); --seeds 2 halves it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from robustprune.config import SweepSpec
from robustprune.sweep import run_sweep


def per_sample(root: Path) -> dict[str, str]:
    """Each cell's per-sample worst-case outcome, by cell key: what must not depend on the executor."""
    out = {}
    for path in sorted(root.glob("cells/*/score/results.json")):
        doc = json.loads(path.read_text())
        out[path.parent.parent.name] = json.dumps(doc["per_sample"], sort_keys=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    spec = SweepSpec(
        recipes=("dense", "magnitude"),
        sparsities=(0.0, 0.5, 0.9),
        seeds=tuple(range(args.seeds)),
        battery="quick",
        eps=0.1,
        n=args.n,
        epochs=args.epochs,
        threads=1,
        device="cpu",
    )
    executors = [("inprocess", 1), ("process", args.workers)]
    if not args.skip_ray:
        executors.append(("ray", args.workers))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rates: dict[str, float] = {}
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, workers in executors:
            out = Path(tmp) / name
            started = time.perf_counter()
            records = run_sweep(spec, out, executor=name, workers=workers)
            seconds = time.perf_counter() - started
            rates[name] = 60.0 * len(records) / seconds
            results[name] = per_sample(out)
            print(
                f"{name:<10} workers {workers}  {len(records)} cells in {seconds:6.1f} s  {rates[name]:5.1f} cells/min"
            )
    base = rates["inprocess"]
    print(f"\n{cores} cores free; grid: {len(results['inprocess'])} cells (dense parents, then magnitude children)")
    for name, workers in executors[1:]:
        ratio = rates[name] / base
        target = 0.8 * min(workers, cores)
        same = "same per-sample results" if results[name] == results["inprocess"] else "PER-SAMPLE RESULTS DIFFER"
        verdict = "meets" if ratio >= target else "misses"
        print(f"{name:<10} {ratio:4.2f}x the sequential rate ({verdict} the {target:.1f}x target; {same})")


if __name__ == "__main__":
    main()
