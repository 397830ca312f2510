"""The `fast` battery against the reference AutoAttack, side by side in one process, on a fixed panel.

Panel (every model trained here, nothing downloaded): on digits, a dense CNN, the same pruned to 90 % by magnitude,
PGD-AT, PGD-AT pruned to 90 %, Deadwooding at 90 % and DIO-AT (randomized, multi-head); and a CIFAR-shaped VGG11
(3x32x32, trained briefly on digits drawn at 32x32 in colour on noisy backgrounds). Each model is scored with
`score` under `fast` and under `autoattack`, on the same examples and seed; the health checks' probes and
escalations run in both and are left out of the comparison, which reads only the battery's own attacks (and,
for `fast`, its audit).

Printed per model and in total: robust accuracy of each; examples AA broke and `fast` did not (and the reverse);
wall time and forward/backward passes of each and the ratio fast/AA, for the battery alone and with its audit;
and the floor: APGD-CE alone (100 steps, the reference implementation, no early stopping) on the same examples,
the cheapest honest gradient evaluation. Targets (never asserted): AA-only breaks at most 1 in 500, time and
passes at most 1/10 of AA's.

    .venv/bin/python bench/fast_vs_autoattack.py [--n 100] [--n-cifar 50] [--epochs 6] [--threads 2]

On 2 CPU cores the whole panel takes about half an hour, most of it the reference AutoAttack on the VGG11.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robustprune.attacks import load_battery
from robustprune.data import Dataset, load_dataset
from robustprune.defenses.pipeline import train_model
from robustprune.scoring import score


@dataclass
class Run:
    broken: np.ndarray
    robust: float
    seconds: float
    forward: int
    backward: int


def battery_part(result, roles: tuple[str, ...]) -> Run:
    """The battery's own share of a score result: its columns' breaks and its attacks' cost."""
    attacks = [a for a in result.attacks if a.role in roles]
    table = result.per_sample
    broken = ~table.clean_correct.copy()
    for a in attacks:
        broken |= table.attacks[a.label].broken
    return Run(
        broken=broken,
        robust=100.0 * float((~broken).mean()),
        seconds=sum(a.seconds for a in attacks),
        forward=sum(a.n_forward for a in attacks),
        backward=sum(a.n_backward for a in attacks),
    )


def cifar_shaped(root: Path, seed: int = 0) -> Path:
    """Digits upsampled to 32x32, tinted per example on a noisy colour background: a locally made 3x32x32 set."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split in ("train", "test"):
        data = load_dataset("digits", split)
        x = nn.functional.interpolate(data.x.float(), size=(32, 32), mode="bilinear", align_corners=False).numpy()
        colour = rng.uniform(0.4, 1.0, size=(len(x), 3, 1, 1))
        background = rng.uniform(0.0, 0.3, size=(len(x), 3, 1, 1)) + rng.normal(0, 0.05, size=(len(x), 3, 32, 32))
        splits[split] = (np.clip(background + x * colour, 0, 1).astype(np.float32), data.y.numpy())
    path = root / "digits32.npz"
    np.savez(
        path, x_train=splits["train"][0], y_train=splits["train"][1], x_test=splits["test"][0], y_test=splits["test"][1]
    )
    return path


def panel(epochs: int, root: Path) -> list[tuple[str, nn.Module, str]]:
    """(name, model, dataset) for every model of the panel."""

    def fit(recipe, dataset="digits", **kw):
        return train_model(recipe, dataset=dataset, epochs=kw.pop("epochs", epochs), seed=0, **kw)[0].model.eval()

    dense = fit("dense")
    robust = fit("pgd_at")
    cifar = cifar_shaped(root)
    return [
        ("dense", dense, "digits"),
        ("magnitude 90%", fit("magnitude", sparsity=0.9, parent=dense, epochs=3), "digits"),
        ("pgd_at", robust, "digits"),
        ("pgd_at 90%", fit("pgd_at", sparsity=0.9), "digits"),
        ("deadwooding 90%", fit("deadwooding", sparsity=0.9, parent=dense, epochs=3), "digits"),
        ("dio_at", fit("dio_at"), "digits"),
        (
            "vgg11 32x32",
            fit("dense", dataset=str(cifar), epochs=4, overrides=["architecture=vgg11", "train.lr=0.01"]),
            str(cifar),
        ),
    ]


def floor_apgd_ce(model: nn.Module, data: Dataset, correct: np.ndarray, eps: float, seed: int) -> tuple[float, int]:
    """The reference APGD-CE alone, 100 steps, one restart, on the clean-correct examples (what every battery
    attacks): (seconds, forward+backward passes in examples)."""
    from pyautoattack.autopgd_base import APGDAttack

    x, y = data.x[torch.from_numpy(correct)], data.y[torch.from_numpy(correct)]
    attack = APGDAttack(model, n_iter=100, norm="Linf", eps=eps, seed=seed, loss="ce", device=x.device)
    started = time.perf_counter()
    if len(x):
        attack.perturb(x, y)
    return time.perf_counter() - started, 2 * 101 * len(x)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="digits examples per model")
    parser.add_argument("--n-cifar", type=int, default=50, help="examples for the 32x32 model")
    parser.add_argument("--eps-cifar", type=float, default=8 / 255, help="Linf eps for the 32x32 model")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eps", type=float, default=0.1, help="Linf eps on digits")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fast, reference = load_battery("fast"), load_battery("autoattack")
    with tempfile.TemporaryDirectory() as tmp:
        models = panel(args.epochs, Path(tmp))
        rows, totals = [], {"n": 0, "aa_only": 0, "fast_only": 0}
        sums = {k: 0.0 for k in ("fs", "fas", "as", "ff", "faf", "af", "floor_s", "floor_p")}
        for name, model, dataset in models:
            n = args.n_cifar if "32" in name else args.n
            eps = args.eps_cifar if "32" in name else args.eps
            data = load_dataset(dataset, "test").subset(n)
            results = {b.name: score(model, data, b, eps=eps, seed=0) for b in (fast, reference)}
            f = battery_part(results["fast"], ("battery",))
            fa = battery_part(results["fast"], ("battery", "audit"))
            a = battery_part(results["autoattack"], ("battery",))
            correct = results["autoattack"].per_sample.clean_correct
            floor_s, floor_p = floor_apgd_ce(model, data, correct, eps, 0)
            aa_only, fast_only = int((a.broken & ~fa.broken).sum()), int((fa.broken & ~a.broken).sum())
            audit = results["fast"].audit
            rows.append(
                (
                    name,
                    n,
                    a.robust,
                    f.robust,
                    fa.robust,
                    aa_only,
                    fast_only,
                    a.seconds,
                    f.seconds,
                    fa.seconds,
                    a.forward + a.backward,
                    f.forward + f.backward,
                    fa.forward + fa.backward,
                    floor_s,
                    floor_p,
                    f"{audit.n_broken}/{audit.n_audited}" if audit else "-",
                    results["fast"].verdict,
                )
            )
            totals["n"] += n
            totals["aa_only"] += aa_only
            totals["fast_only"] += fast_only
            for key, value in (
                ("fs", f.seconds),
                ("fas", fa.seconds),
                ("as", a.seconds),
                ("ff", f.forward + f.backward),
                ("faf", fa.forward + fa.backward),
                ("af", a.forward + a.backward),
                ("floor_s", floor_s),
                ("floor_p", floor_p),
            ):
                sums[key] += value
            print(
                f"done: {name} ({n} examples): AA {a.robust:.1f} % in {a.seconds:.1f} s, fast {f.robust:.1f} % in "
                f"{f.seconds:.1f} s (+audit {fa.robust:.1f} % in {fa.seconds:.1f} s), AA-only {aa_only}, "
                f"fast-only {fast_only}",
                flush=True,
            )
    print(f"\nthreads={torch.get_num_threads()}, seed 0; fast = the battery, +audit = with its audit (union)\n")
    head = (
        f"{'model':<16} {'n':>4} {'AA %':>6} {'fast %':>7} {'+aud %':>7} {'AA-only':>7} {'fast-only':>9} "
        f"{'AA s':>7} {'fast s':>7} {'+aud s':>7} {'ratio':>6} {'+aud':>6} {'pass ratio':>10} {'+aud':>6} "
        f"{'floor s':>7} {'audit':>6}  verdict"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        (name, n, ar, fr, far, ao, fo, a_s, f_s, fa_s, a_p, f_p, fa_p, fl_s, _fl_p, audit, verdict) = r
        print(
            f"{name:<16} {n:>4} {ar:>6.1f} {fr:>7.1f} {far:>7.1f} {ao:>7} {fo:>9} {a_s:>7.1f} {f_s:>7.1f} "
            f"{fa_s:>7.1f} {ratio(f_s, a_s):>6.3f} {ratio(fa_s, a_s):>6.3f} {ratio(f_p, a_p):>10.3f} {ratio(fa_p, a_p):>6.3f} "
            f"{fl_s:>7.1f} {audit:>6}  {verdict}"
        )
    print("-" * len(head))
    print(
        f"{'total':<16} {totals['n']:>4} {'':>6} {'':>7} {'':>7} {totals['aa_only']:>7} {totals['fast_only']:>9} "
        f"{sums['as']:>7.1f} {sums['fs']:>7.1f} {sums['fas']:>7.1f} {sums['fs'] / sums['as']:>6.3f} "
        f"{sums['fas'] / sums['as']:>6.3f} {sums['ff'] / sums['af']:>10.3f} {sums['faf'] / sums['af']:>6.3f} "
        f"{sums['floor_s']:>7.1f}"
    )
    print(
        f"\nAA broke {totals['aa_only']} of {totals['n']} examples that fast (with its audit) did not "
        f"(target: at most {totals['n'] / 500:.1f}); fast broke {totals['fast_only']} that AA did not."
    )
    print(
        f"time fast/AA {sums['fs'] / sums['as']:.3f} (with audit {sums['fas'] / sums['as']:.3f}; target <= 0.1); "
        f"passes fast/AA {sums['ff'] / sums['af']:.3f} (with audit {sums['faf'] / sums['af']:.3f}); "
        f"floor (APGD-CE 100 steps, reference, no early stop) / AA: time {sums['floor_s'] / sums['as']:.3f}, "
        f"passes {sums['floor_p'] / sums['af']:.3f}"
    )


if __name__ == "__main__":
    main()
