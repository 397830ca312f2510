"""Small FAKE sweep directories for the report / check / plugin tests, laid out exactly as `run_sweep` writes them.

Real score documents (a tiny MLP trained by full-batch gradient descent, pruned by magnitude, scored with the quick
battery on 40 digits) written through the lead's `summarize` and `sweep_document`, but without `run_sweep` (which
needs the defenses): each cell is made here in well under a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustprune.atomic import write_json
from robustprune.attacks import load_battery
from robustprune.config import canonical_key
from robustprune.data import Dataset, load_dataset
from robustprune.results import CellConfig, CellRecord, save_result
from robustprune.scoring import score
from robustprune.sparsity import apply_masks
from robustprune.sweep import SweepSpec, sweep_document

N = 40
EPS = 0.1


@dataclass(frozen=True)
class CellPlan:
    recipe: str
    sparsity: float
    seed: int
    steps: int = 60  # gradient steps: fewer steps make a weaker model
    parent: tuple[str, float] | None = None  # (recipe, sparsity) of the parent cell, same seed


DEFAULT_PLAN = (
    CellPlan("dense", 0.0, 0),
    CellPlan("dense", 0.0, 1),
    CellPlan("magnitude", 0.5, 0, parent=("dense", 0.0)),
    CellPlan("magnitude", 0.5, 1, parent=("dense", 0.0)),
    CellPlan("magnitude", 0.9, 0, parent=("dense", 0.0)),
    CellPlan("magnitude", 0.9, 1, parent=("dense", 0.0)),
    CellPlan("pgd_at", 0.0, 0, steps=40),
    CellPlan("pgd_at_agp", 0.5, 0, steps=40, parent=("pgd_at", 0.0)),
)


def train_mlp(seed: int, steps: int, train: Dataset) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    for _ in range(steps):
        model.zero_grad()
        nn.functional.cross_entropy(model(train.x), train.y).backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= 0.5 * param.grad
    return model


def prune(model: nn.Module, sparsity: float) -> nn.Module:
    if sparsity <= 0:
        return model
    masks = {}
    for name in ("1", "3"):
        weight = model.get_submodule(name).weight.detach()
        k = round(sparsity * weight.numel())
        threshold = weight.abs().flatten().kthvalue(k).values
        masks[name] = weight.abs() > threshold
    apply_masks(model, masks)
    return model


def make_sweep(
    root: Path,
    plan: tuple[CellPlan, ...] = DEFAULT_PLAN,
    *,
    battery: str = "quick",
    eps: float = EPS,
    n: int = N,
    write_results: bool = True,
) -> list[CellRecord]:
    """Write sweep.json, cells/<key>/{cell.json,score/results.json} and (optionally) results.json under `root`."""
    train = load_dataset("digits", "train")
    data = load_dataset("digits", "test").subset(n)
    spec_battery = load_battery(battery, eps=eps)
    common = {
        "dataset": "digits",
        "data_fingerprint": data.fingerprint(),
        "n": n,
        "battery": {k: v for k, v in spec_battery.to_dict().items() if k != "source"},
        "batch_size": 64,
        "threads": 1,
        "robustprune": "test",
    }
    keys: dict[tuple[str, float, int], str] = {}
    records = []
    for p in plan:
        parent_key = keys[(*p.parent, p.seed)] if p.parent else None
        config = common | {
            "recipe_name": p.recipe,
            "sparsity": p.sparsity,
            "seed": p.seed,
            "steps": p.steps,
            "parent": parent_key,
        }
        key = canonical_key(config)
        keys[(p.recipe, p.sparsity, p.seed)] = key
        model = prune(train_mlp(p.seed, p.steps, train), p.sparsity).eval()
        result = score(model, data, spec_battery, batch_size=64, seed=p.seed, architecture="mlp-64-32")
        cell_dir = root / "cells" / key
        save_result(result, cell_dir / "score", html=False)
        record = CellRecord.summarize(
            key=key,
            recipe=p.recipe,
            sparsity=p.sparsity,
            seed=p.seed,
            parent_key=parent_key,
            config=CellConfig.from_json(config),
            result=result,
            architecture="mlp-64-32",
            train_seconds=0.5 + p.steps / 100,
            result_path=f"cells/{key}/score/results.json",
        )
        write_json(cell_dir / "cell.json", record.to_json())
        records.append(record)
    recipes = tuple(dict.fromkeys(p.recipe for p in plan))
    spec = SweepSpec(
        recipes=recipes,
        sparsities=tuple(sorted({p.sparsity for p in plan})),
        seeds=tuple(sorted({p.seed for p in plan})),
        battery=battery,
        eps=eps,
        n=n,
    )
    write_json(root / "sweep.json", {"spec": spec.to_dict(), "cells": [r.key for r in records]})
    if write_results:
        write_json(root / "results.json", sweep_document(spec, records))
    return records


def score_doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
