"""Does every device this machine has compute what the CPU computes? A smoke check, not a test.

On each available device (cpu, every cuda:N, mps): a one-epoch `dense` train of digits_cnn, then a score of one
fixed model (the CPU-trained one) with the quick battery on the first 64 digits test examples. Against the CPU:
clean predictions must match exactly; robust outcomes (broken or not, per example) may differ by floating-point
rounding, so their agreement rate is reported. Prints a table; exits 1 when clean predictions differ.

    .venv/bin/python bench/device_smoke.py [--n 64] [--battery quick]

This project's CI and development machine have no GPU: run it where one is at hand.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np
import torch

from robustprune.data import load_dataset
from robustprune.defenses.pipeline import train_model
from robustprune.devices import device_record
from robustprune.scoring import score


def available_devices() -> list[torch.device]:
    devices = [torch.device("cpu")]
    devices += [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(torch.device("mps"))
    return devices


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--battery", default="quick")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_dataset("digits", "test").subset(args.n)
    rows, reference, fixed_model = [], None, None
    ok = True
    for device in available_devices():
        started = time.perf_counter()
        artifact, manifest = train_model("dense", epochs=1, seed=args.seed, device=device)
        train_s = time.perf_counter() - started
        if fixed_model is None:
            fixed_model = copy.deepcopy(artifact.model)  # the CPU's, scored on every device
        trained_state = {k: v.detach().cpu() for k, v in artifact.model.state_dict().items()}
        started = time.perf_counter()
        result = score(copy.deepcopy(fixed_model), data, args.battery, seed=args.seed, device=device, efficiency=False)
        score_s = time.perf_counter() - started
        table = result.per_sample
        assert table is not None
        clean_pred, broken = table.clean_pred.copy(), table.broken.copy()
        val_acc = (manifest.get("final") or {}).get("val_acc")
        if reference is None:
            reference = (clean_pred, broken, trained_state, val_acc)
            clean_match, robust_agree, weight_diff = "ref", "ref", "ref"
        else:
            same_clean = bool(np.array_equal(clean_pred, reference[0]))
            ok &= same_clean
            clean_match = "yes" if same_clean else "NO"
            robust_agree = f"{100.0 * float(np.mean(broken == reference[1])):.1f} %"
            weight_diff = f"{max(float((v - reference[2][k]).abs().max()) for k, v in trained_state.items()):.2e}"
        record = device_record(device)
        rows.append(
            (
                str(device),
                record["name"],
                f"{train_s:.1f}",
                f"{val_acc:.3f}" if isinstance(val_acc, float) else "n/a",
                weight_diff,
                f"{score_s:.1f}",
                f"{result.clean_acc:.1f}",  # percentages
                f"{result.robust_acc:.1f}",
                clean_match,
                robust_agree,
            )
        )
    head = (
        "device",
        "name",
        "train s",
        "val acc (1 ep)",
        "max |w - w_cpu|",
        "score s",
        "clean %",
        "robust %",
        "clean preds = cpu",
        "robust agree w/ cpu",
    )
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    print(f"digits_cnn, battery {args.battery}, {len(data)} examples, seed {args.seed}")
    for line in (head, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    if len(rows) == 1:
        print("only the CPU is available here: nothing to compare (run this where a GPU is at hand)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
