"""The `autoattack` battery is the reference pyautoattack, run as upstream runs it."""

from __future__ import annotations

import numpy as np
import torch
from pyautoattack import AutoAttack

from robustprune.scoring import score


def test_autoattack_battery_matches_a_direct_pyautoattack_run(trained_mlp, digits_test):
    data = digits_test.subset(48)
    doc = score(trained_mlp, data, "autoattack", eps=0.08, batch_size=32, seed=5).document
    ours = np.asarray(doc["per_sample"]["broken"])

    adversary = AutoAttack(trained_mlp.eval(), norm="Linf", eps=0.08, version="standard", seed=5, device="cpu")
    x_adv, _ = adversary.run_standard_evaluation(data.x, data.y, batch_size=32)
    with torch.no_grad():
        direct = (trained_mlp(x_adv).argmax(1) != data.y).numpy()

    assert np.array_equal(ours, direct)
    assert 0 < ours.sum() < len(ours)  # the comparison is not vacuous
    assert doc["autoattack_acc"] == doc["robust_acc"]
    attack = doc["attacks"][0]
    assert attack["implementation"] == "pyautoattack.AutoAttack" and attack["library"] == "pyautoattack"
    assert attack["settings"]["version"] == "standard"
