"""What the health checks (with their probes and any escalation) add to the `standard` battery on healthy models.

Side by side in one process, for each model: the battery alone through the engine (`run_battery`), then `score`
with the same battery, which adds the model checks before it and the outcome checks, probes and escalations
after it. Prints both times, the checks' own time, and the ratio of the checks' time to the battery's; the goal
is at most 0.25. No assertions (timings are not tests).

    .venv/bin/python bench/health_overhead.py [--n 200] [--battery standard]
"""

from __future__ import annotations

import argparse
import time

import torch

from robustprune.attacks import load_battery, run_battery
from robustprune.data import load_dataset
from robustprune.defenses.pipeline import train_model
from robustprune.scoring import score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--battery", default="standard")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    test = load_dataset("digits", "test").subset(args.n)
    battery = load_battery(args.battery)
    models = {recipe: train_model(recipe, epochs=args.epochs, seed=0)[0].model.eval() for recipe in ("dense", "pgd_at")}
    print(f"battery {battery.name}, n={len(test)}, threads={torch.get_num_threads()}")
    print(f"{'model':<8} {'battery s':>9} {'score s':>8} {'checks s':>8} {'checks/battery':>14}  verdict")
    for name, model in models.items():
        started = time.perf_counter()
        run_battery(model, test.x, test.y, battery, num_classes=test.num_classes, seed=0)
        alone = time.perf_counter() - started
        started = time.perf_counter()
        result = score(model, test, battery, seed=0)
        scored = time.perf_counter() - started
        checks = result.health.seconds
        print(
            f"{name:<8} {alone:>9.1f} {scored:>8.1f} {checks:>8.1f} {checks / alone:>14.3f}  {result.verdict}"
            f" (score - battery = {scored - alone:.1f} s)"
        )


if __name__ == "__main__":
    main()
