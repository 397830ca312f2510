"""How much the battery engine adds over the attacks' own compute.

Runs the same attacks on the same examples twice, side by side in one process: directly through torchattacks /
pyautoattack, and through robustprune's battery engine (unbroken-only scheduling, verification, fresh forward
pass, counting). Prints the ratio engine / direct; no assertions (timings are not tests).

    .venv/bin/python bench/battery_overhead.py [--n 360] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchattacks

from robustprune.attacks.battery import run_battery
from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.data import load_dataset
from robustprune.defenses.train_loop import TrainSpec, fit
from robustprune.models import build_model


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=360)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test").subset(args.n)
    model = build_model("mlp", 10, train.input_shape)
    fit(model, train, test, TrainSpec(epochs=5, optimizer="adam", lr=3e-3, weight_decay=0.0, probe_steps=1))
    model.eval()
    threat = ThreatModel(norm="Linf", eps=0.1)
    cases = {
        "pgd-40": (lambda m: torchattacks.PGD(m, eps=0.1, alpha=0.1 / 16, steps=40), AttackSpec(name="pgd")),
        "apgd-ce-100": (
            lambda m: torchattacks.APGD(m, eps=0.1, steps=100, seed=0),
            AttackSpec(name="apgd", params={"steps": 100}),
        ),
    }
    print(
        f"{'attack':<12} {'direct s':>9} {'engine s':>9} {'ratio':>6}   (n={len(test)}, threads={torch.get_num_threads()})"
    )
    for label, (direct_factory, spec) in cases.items():
        # The engine attacks only clean-correct examples, so the direct run gets exactly those too.
        with torch.no_grad():
            correct = model(test.x).argmax(1) == test.y
        x, y = test.x[correct], test.y[correct]
        attack = direct_factory(model)
        direct = best_of(
            args.repeats, lambda a=attack, x=x, y=y: [a(x[i : i + 256], y[i : i + 256]) for i in range(0, len(x), 256)]
        )
        battery = BatterySpec(name="bench", threat=threat, attacks=(spec,))
        engine = best_of(args.repeats, lambda b=battery: run_battery(model, test.x, test.y, b, num_classes=10))
        print(f"{label:<12} {direct:9.3f} {engine:9.3f} {engine / direct:6.2f}")


if __name__ == "__main__":
    main()
