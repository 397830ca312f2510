"""Training on data without a separate split holds out a seeded, stratified validation share and says so, instead
of validating on the training examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustprune.data import load_dataset
from robustprune.data.holdout import stratified_holdout
from robustprune.defenses.pipeline import summary, train_model


def test_holdout_is_stratified_seeded_and_disjoint() -> None:
    data = load_dataset("digits", "train")
    train, val, record = stratified_holdout(data, 0.1, seed=3)
    assert len(train) + len(val) == len(data) and record.n_val == len(val)
    for cls in range(10):
        n = int((data.y == cls).sum())
        assert int((val.y == cls).sum()) == max(1, round(0.1 * n))
    again = stratified_holdout(data, 0.1, seed=3)[1]
    assert torch.equal(again.x, val.x)
    assert not torch.equal(stratified_holdout(data, 0.1, seed=4)[1].x, val.x)
    rows = {tuple(r) for r in train.x.flatten(1).tolist()}
    assert not any(tuple(r) in rows for r in val.x.flatten(1).tolist())


def test_train_on_an_xy_npz_holds_out_a_validation_split(tmp_path: Path) -> None:
    data = load_dataset("digits", "test")
    path = tmp_path / "xy.npz"
    np.savez(path, x=data.x.numpy()[:300], y=data.y.numpy()[:300])
    _, manifest = train_model("dense", dataset=str(path), epochs=1, overrides=["train.probe_size=16"])
    held = manifest["dataset"]["validation"]
    assert held["held_out"] and held["val_examples"] == manifest["dataset"]["val_examples"] < 60
    assert manifest["dataset"]["train_fingerprint"] != manifest["dataset"]["val_fingerprint"]
    assert "held out" in summary(manifest)
    _, digits = train_model("dense", epochs=1, overrides=["train.probe_size=16"])
    assert "validation" not in digits["dataset"]  # digits has its own test split
