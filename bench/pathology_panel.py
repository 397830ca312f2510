"""The generated pathology panel, measured: every pathology of tests/pathologies.py on each architecture (a digits
MLP, a digits CNN, the CNN magnitude-pruned to 80 %), scored as a user would (`score`, the chosen battery, the
default escalation budget), against the adaptive reference attack on the same examples (torchattacks PGD-50 x 2
restarts, EOT for noise, crafted on the reference model and judged on the pathological one).

Prints a Markdown table (pathology, architecture, verdict or the one-line error, checks that fired, robust count
vs the reference) and totals; no assertions.

    .venv/bin/python bench/pathology_panel.py [--n 60] [--battery fast] [--architectures mlp,cnn,"pruned cnn"]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from broken_models import pruned, reference_robust
from pathologies import PATHOLOGIES

from robustprune.data import load_dataset
from robustprune.defenses.pipeline import train_model
from robustprune.defenses.train_loop import TrainSpec, fit
from robustprune.errors import UsageError, UserCodeError
from robustprune.models import build_model
from robustprune.scoring import RANDOMIZED_PASSES, score


def architectures() -> dict:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    mlp = build_model("mlp", 10, (1, 8, 8))
    fit(mlp, train, test, TrainSpec(epochs=8, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0.0), seed=0)
    mlp.eval()
    cnn = train_model("dense", epochs=6, seed=0)[0].model.eval()
    return {
        "mlp": lambda: copy.deepcopy(mlp),
        "cnn": lambda: copy.deepcopy(cnn),
        "pruned cnn": lambda: pruned(cnn, 0.8),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--battery", default="fast")
    parser.add_argument("--architectures", default="mlp,cnn,pruned cnn")
    parser.add_argument("--pathologies", help="comma-separated names (default: all)")
    args = parser.parse_args()
    data = load_dataset("digits", "test").subset(args.n)
    builders = architectures()
    wanted = set(args.pathologies.split(",")) if args.pathologies else None
    rows, counts = [], {"cases": 0, "clean": 0, "inflating": 0, "not trusted": 0, "with reference": 0, "within": 0}
    for pathology in PATHOLOGIES:
        if wanted and pathology.name not in wanted:
            continue
        for arch in args.architectures.split(","):
            build = builders[arch]
            model = pathology.wrap(build(), tuple(data.input_shape), data.num_classes)
            started = time.perf_counter()
            counts["cases"] += 1
            try:
                result = score(model, data, args.battery, eps=0.1, seed=0, efficiency=False)
            except (UsageError, UserCodeError) as exc:
                code = 2 if isinstance(exc, UsageError) else 1
                counts["clean"] += "\n" not in str(exc)
                rows.append(f"| {pathology.name} | {arch} | exit {code}: {str(exc)[:110]} | - | - | - | - |")
                continue
            counts["clean"] += 1
            seconds = time.perf_counter() - started
            fired = ", ".join(
                f"{c.id} {c.status}" + (" (resolved)" if c.resolved_by else "")
                for c in result.health.checks
                if c.status in ("warn", "fail", "error")
            )
            robust = round(result.robust_acc * args.n / 100)
            battery = round(result.health.battery_robust_acc * args.n / 100)
            reference = "-"
            if pathology.reference is not None:
                judged = pathology.wrap(build(), tuple(data.input_shape), data.num_classes).eval()
                eot = {"eot_iter": 20, "n_passes": RANDOMIZED_PASSES} if pathology.randomized else {}
                torch.manual_seed(0)
                ref = reference_robust(pathology.reference(build()).eval(), judged, data.x, data.y, 0.1, **eot)
                reference = str(ref)
                counts["with reference"] += 1
                counts["within"] += robust <= ref + 1
            if pathology.inflates:
                counts["inflating"] += 1
                counts["not trusted"] += result.verdict != "trusted"
            rows.append(
                f"| {pathology.name} | {arch} | {result.verdict} | {fired or '-'} | {battery} -> {robust} | "
                f"{reference} | {seconds:.0f} s |"
            )
    print(f"digits, Linf 0.1, {args.n} examples, battery {args.battery}, default escalation budget, seed 0\n")
    print(
        "| pathology | architecture | verdict / error | checks that fired | robust: battery -> final | reference | time |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(
        f"\n{counts['cases']} models; {counts['clean']} ended in a verdict or a one-line error; "
        f"{counts['not trusted']} of {counts['inflating']} inflating pathologies not trusted; "
        f"{counts['within']} of {counts['with reference']} within the reference + 1 example"
    )


if __name__ == "__main__":
    main()
