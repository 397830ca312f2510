"""The panel of broken models, measured: what the evaluation verdict says about each, and how close the escalated
robust accuracy comes to a correct adaptive attack on the same examples.

For each model (digits_cnn wrappers from tests/broken_models.py, and the healthy controls): the verdict, the
checks that warned or failed, the battery's own robust accuracy, the robust accuracy after probes and
escalations, and the adaptive reference (torchattacks PGD-50 x 2 restarts, or EOT-PGD, on the model the way it
should be attacked: BPDA through the quantizer, the logits before scaling or softmax, through the detach).
Prints a Markdown table; no assertions.

    .venv/bin/python bench/broken_panel.py [--n 150] [--battery quick] [--models softmax,noise,...]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from broken_models import (
    Detached,
    Noisy,
    Quantize,
    Scaled,
    Softmax,
    bn_dropout_cnn,
    pruned,
    reference_robust,
)

from robustprune.attacks import load_battery
from robustprune.data import load_dataset
from robustprune.defenses.pipeline import train_model
from robustprune.defenses.train_loop import TrainSpec, fit
from robustprune.scoring import RANDOMIZED_PASSES, score


def panel(cnn: nn.Module, bn: nn.Module, robust_cnn: nn.Module) -> dict:
    """name -> (model to score, model to attack for the reference, reference options, parent)."""
    sparse = pruned(cnn, 0.8)
    return {
        "healthy CNN": (cnn, cnn, {}, None),
        "PGD-AT CNN": (robust_cnn, robust_cnn, {}, None),
        "softmax output": (Softmax(cnn), cnn, {}, None),
        "BatchNorm+Dropout in train mode": (copy.deepcopy(bn).train(), copy.deepcopy(bn), {}, None),
        "noise in forward (sigma 0.1)": (Noisy(cnn, 0.1), None, {"steps": 20, "restarts": 1, "eot_iter": 10}, None),
        "input quantization (3 levels)": (
            nn.Sequential(Quantize(2), cnn),
            nn.Sequential(Quantize(2, straight_through=True), cnn),
            {},
            None,
        ),
        "saturated logits (x1e4)": (Scaled(cnn, 1e4), cnn, {}, None),
        "forward on x.detach()": (Detached(cnn), cnn, {}, None),
        "80 % pruned + saturated": (Scaled(sparse, 1e4), sparse, {}, cnn),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--battery", default="quick")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--models", default="", help="comma-separated substrings of the model names to run")
    args = parser.parse_args()
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test").subset(args.n)
    battery = load_battery(args.battery)
    cnn = train_model("dense", epochs=8, seed=0)[0].model.eval()
    robust_cnn = train_model("pgd_at", epochs=8, seed=0)[0].model.eval()
    torch.manual_seed(0)
    bn = bn_dropout_cnn()
    fit(bn, train, test, TrainSpec(epochs=6, optimizer="adam", lr=3e-3, weight_decay=0.0, probe_steps=1), seed=0)
    bn.eval()
    wanted = [w for w in args.models.split(",") if w]
    print(f"digits, n = {len(test)}, Linf eps = {args.eps}, battery {battery.name}, seed 0\n")
    print(
        "| model | verdict | warned / failed checks | battery only % | after escalation % | adaptive reference % | s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (model, attacked, options, parent) in panel(cnn, bn, robust_cnn).items():
        if wanted and not any(w in name for w in wanted):
            continue
        started = time.perf_counter()
        result = score(model, test, battery, eps=args.eps, seed=0, parent=parent)
        seconds = time.perf_counter() - started
        randomized = options.get("eot_iter", 0) > 0
        reference = reference_robust(
            attacked if attacked is not None else model,
            model,
            test.x,
            test.y,
            args.eps,
            n_passes=RANDOMIZED_PASSES if randomized else 1,
            **options,
        )
        flagged = ", ".join(
            f"{c.id} {c.status}" + (f" (resolved: {c.resolved_by})" if c.resolved_by else "")
            for c in result.health.failing()
        )
        print(
            f"| {name} | {result.verdict} | {flagged or '-'} | {result.health.battery_robust_acc:.1f} | "
            f"{result.robust_acc:.1f} | {100 * reference / len(test):.1f} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
