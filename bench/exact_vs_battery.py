"""The ground truth for the batteries: exact robust accuracy (CROWN, then the big-M MILP) against `fast`, the
reference AutoAttack and PGD-20, on pruned MLPs, side by side in one process.

Models (every one trained here): digits `mlp`s pruned by global magnitude to 80, 90 and 95 % from a dense parent
(standard fine-tuning) and from a PGD-AT parent (PGD-AT fine-tuning). Each is judged on the whole digits test set
(360 examples) at Linf 0.1 and 0.05:
- every battery scored with `score` (certify none), its own attacks read from the per-sample table;
- the truth from robustprune.verify: CROWN on every correctly classified example, then the MILP on each example
  no attack broke and CROWN did not certify (a counterexample counts only after the float32 model misclassifies
  it inside the ball); proved, counterexample or unknown (time limit) per example.
Printed per model and eps: clean, certified (CROWN), exact (or the bracket where some example stayed unknown), each
battery's robust accuracy and the examples it left that are breakable (split: another attack broke them / only
the MILP did), and the time of each stage. Then the cost of `--certify auto` (CROWN) beside a `fast` score.

    .venv/bin/python bench/exact_vs_battery.py [--n 360] [--time-limit 30] [--epochs 8] [--threads 2]

On 2 CPU cores it takes about half an hour; the README's table is its output.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from robustprune.attacks import load_battery
from robustprune.config import AttackSpec, BatterySpec, ThreatModel
from robustprune.data import Dataset, load_dataset
from robustprune.defenses.pipeline import train_model
from robustprune.scoring import score
from robustprune.verify.certify import certify_examples, project_linf, verifiable_network
from robustprune.verify.milp import solver_name


def models(epochs: int) -> list[tuple[str, nn.Module]]:
    mlp = ["architecture=mlp"]

    def fit(recipe: str, **kw) -> nn.Module:
        return train_model(recipe, dataset="digits", seed=0, overrides=mlp + kw.pop("overrides", []), **kw)[0].model

    dense = fit("dense", epochs=epochs)
    robust = fit("pgd_at", epochs=epochs)
    out = []
    for sparsity in (0.8, 0.9, 0.95):
        out.append((f"magnitude {sparsity:.0%}", fit("magnitude", sparsity=sparsity, parent=dense, epochs=3)))
        out.append(
            (
                f"pgd_at parent {sparsity:.0%}",
                fit("magnitude", sparsity=sparsity, parent=robust, epochs=3, overrides=["defense=pgd_at"]),
            )
        )
    return [(name, model.eval()) for name, model in out]


def battery_broken(result) -> np.ndarray:
    """Examples the battery's own attacks (and, for fast, its audit) broke, clean-wrong ones included."""
    table = result.per_sample
    broken = ~table.clean_correct.copy()
    for attack in result.attacks:
        if attack.role in ("battery", "audit"):
            broken |= table.attacks[attack.label].broken
    return broken


def truth(model: nn.Module, data: Dataset, eps: float, left: np.ndarray, time_limit: float) -> dict:
    """CROWN on every clean-correct example, the MILP on `left` (what no attack broke) that CROWN did not certify."""
    network, _ = verifiable_network(model, data.x, data.num_classes)
    with torch.no_grad():
        correct = (model(data.x).argmax(1) == data.y).numpy()
    run = certify_examples(
        network, data.x, data.y, norm="Linf", eps=eps, bound=correct, search=left & correct,
        time_limit=time_limit, budget=float("inf"),
    )  # fmt: skip
    status = np.where(correct, "attacked", "wrong").astype(object)
    status[run.certified] = "certified"
    status[run.proved] = "proved"
    status[list(run.unknown_reason)] = "unknown"
    for i, found in run.counterexamples.items():
        point = project_linf(found, data.x[i], eps)
        with torch.no_grad():
            fooled = int(model(point[None]).argmax()) != int(data.y[i])
        status[i] = "milp-broken" if fooled else "unknown"
    status[correct & ~left & (status == "unknown")] = "attacked"  # CROWN left them; an attack broke them anyway
    return {
        "status": status,
        "crown_s": run.seconds_crown,
        "milp_s": run.seconds_exact,
        "milp_n": int((left & correct & ~run.certified).sum()),
        "relus": network.n_relus,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=360)
    parser.add_argument("--time-limit", type=float, default=30.0, help="MILP seconds per example")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--overhead-only", action="store_true", help="only the cost of --certify auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("digits", "test").subset(args.n)
    if args.overhead_only:
        dense = train_model("dense", dataset="digits", seed=0, epochs=args.epochs, overrides=["architecture=mlp"])
        auto_overhead(data, [("mlp dense", dense[0].model.eval())])
        return
    trained = models(args.epochs)
    print(f"solver: {solver_name()}; threads {torch.get_num_threads()}; n = {len(data)}; seed 0\n", flush=True)
    rows = []
    for eps in (0.1, 0.05):
        threat = ThreatModel(norm="Linf", eps=eps)
        batteries = {
            "pgd20": BatterySpec(
                name="pgd20", threat=threat, attacks=(AttackSpec(name="pgd", params={"steps": 20, "rel_step": 0.125}),)
            ),
            "fast": load_battery("fast", eps=eps),
            "autoattack": load_battery("autoattack", eps=eps),
        }
        for name, model in trained:
            broken, seconds = {}, {}
            for key, battery in batteries.items():
                started = time.perf_counter()
                result = score(model, data, battery, seed=0, efficiency=False, certify="none")
                seconds[key] = time.perf_counter() - started
                broken[key] = battery_broken(result)
            union = np.logical_or.reduce(list(broken.values()))
            found = truth(model, data, eps, ~union, args.time_limit)
            status = found["status"]
            breakable = union | (status == "milp-broken")
            proven = np.isin(status, ("certified", "proved"))
            unknown = int((status == "unknown").sum())
            row = {
                "model": name,
                "eps": eps,
                "clean": 100.0 * float((status != "wrong").mean()),
                "certified": 100.0 * float((status == "certified").mean()),
                "lower": 100.0 * float(proven.mean()),
                "upper": 100.0 * float((~breakable).mean()),
                "unknown": unknown,
                "milp_only": int((status == "milp-broken").sum()),
                "relus": found["relus"],
                "crown_s": found["crown_s"],
                "milp_s": found["milp_s"],
                "milp_n": found["milp_n"],
            }
            for key in batteries:
                left = breakable & ~broken[key]
                row[f"{key}_acc"] = 100.0 * float((~broken[key]).mean())
                row[f"{key}_missed"] = int(left.sum())
                row[f"{key}_milp"] = int((left & (status == "milp-broken")).sum())
                row[f"{key}_s"] = seconds[key]
            rows.append(row)
            exact = f"{row['lower']:.1f}" if unknown == 0 else f"[{row['lower']:.1f}, {row['upper']:.1f}]"
            print(
                f"done: {name} eps {eps}: exact {exact} %, fast {row['fast_acc']:.1f} (missed {row['fast_missed']}), "
                f"AA {row['autoattack_acc']:.1f} (missed {row['autoattack_missed']}), PGD-20 {row['pgd20_acc']:.1f} "
                f"(missed {row['pgd20_missed']}); MILP {row['milp_s']:.0f} s on {row['milp_n']}",
                flush=True,
            )
    print(
        "\n| model | eps | clean % | certified (CROWN) % | exact % | fast % (missed / MILP only) | AutoAttack % (missed /"
        " MILP only) | PGD-20 % (missed / MILP only) | CROWN s | MILP s (examples) | fast s | AA s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        exact = (
            f"{r['lower']:.1f}" if r["unknown"] == 0 else f"{r['lower']:.1f}-{r['upper']:.1f} ({r['unknown']} unknown)"
        )
        cells = [
            r["model"],
            f"{r['eps']:g}",
            f"{r['clean']:.1f}",
            f"{r['certified']:.1f}",
            exact,
            *(f"{r[f'{k}_acc']:.1f} ({r[f'{k}_missed']} / {r[f'{k}_milp']})" for k in ("fast", "autoattack", "pgd20")),
            f"{r['crown_s']:.1f}",
            f"{r['milp_s']:.0f} ({r['milp_n']})",
            f"{r['fast_s']:.0f}",
            f"{r['autoattack_s']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    auto_overhead(data, trained)


def auto_overhead(data: Dataset, trained: list[tuple[str, nn.Module]], repeats: int = 3) -> None:
    """What `--certify auto` (CROWN on every correct example) adds to a `fast` score: whole scores with and without
    it, interleaved and repeated (medians), and the bounds stage's own time as the result records it."""
    print(f"\n--certify auto against none, `fast` at Linf 0.1 (whole score, efficiency off, median of {repeats}):")
    fast = load_battery("fast")
    cnn = train_model("dense", dataset="digits", seed=0, epochs=3)[0].model.eval()
    for name, model in [trained[0], ("digits_cnn dense", cnn)]:
        times: dict[str, list[float]] = {"none": [], "auto": []}
        stage = []
        for _ in range(repeats):
            for mode in ("none", "auto"):
                started = time.perf_counter()
                result = score(model, data, fast, seed=0, efficiency=False, certify=mode)
                times[mode].append(time.perf_counter() - started)
                if mode == "auto":
                    stage.append(result.bounds.seconds)
        none, auto = float(np.median(times["none"])), float(np.median(times["auto"]))
        print(
            f"  {name}: none {none:.1f} s, auto {auto:.1f} s ({100 * (auto / none - 1):+.1f} %); the bounds stage "
            f"{np.median(stage):.2f} s ({100 * np.median(stage) / none:.1f} % of the score); {result.bounds.line()}"
        )


if __name__ == "__main__":
    main()
