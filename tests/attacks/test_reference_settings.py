"""The `standard` battery claims AutoAttack's settings for torchattacks' ports: check each against the reference.

Both objects are built and their attributes read, so a changed default on either side fails here.
"""

from __future__ import annotations

import pytest
from pyautoattack import AutoAttack as ReferenceAutoAttack
from torch import nn

from robustprune.attacks import ATTACKS, load_battery

# (our attack name, the reference component's attribute on pyautoattack.AutoAttack, attributes to compare as
#  (name on the torchattacks object, name on the reference object))
PORTS = {
    "apgd-ce": (
        "apgd",
        [("steps", "n_iter"), ("n_restarts", "n_restarts"), ("thr_decr", "thr_decr"), ("eot_iter", "eot_iter")],
    ),
    "apgd-t": (
        "apgd_targeted",
        [
            ("steps", "n_iter"),
            ("n_restarts", "n_restarts"),
            ("thr_decr", "thr_decr"),
            ("eot_iter", "eot_iter"),
            ("n_target_classes", "n_target_classes"),
        ],
    ),
    "fab-t": (
        "fab",
        [
            ("steps", "n_iter"),
            ("n_restarts", "n_restarts"),
            ("alpha_max", "alpha_max"),
            ("eta", "eta"),
            ("beta", "beta"),
            ("n_target_classes", "n_target_classes"),
        ],
    ),
    "square": (
        "square",
        [
            ("n_queries", "n_queries"),
            ("n_restarts", "n_restarts"),
            ("p_init", "p_init"),
            ("rescale_schedule", "rescale_schedule"),
            ("loss", "loss"),
        ],
    ),
}


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("label", sorted(PORTS))
def test_standard_battery_port_has_the_reference_settings(label, norm):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    battery = load_battery("standard", norm=norm, eps=0.1)
    spec = next(a for a in battery.attacks if a.label == label)
    ours = ATTACKS.get(spec.name)(spec, battery.threat, 10).build(model, seed=0)
    reference = ReferenceAutoAttack(model, norm=norm, eps=0.1, version="standard", seed=0)
    component_name, pairs = PORTS[label]
    component = getattr(reference, component_name)
    differ = {
        ours_attr: (getattr(ours, ours_attr), getattr(component, ref_attr))
        for ours_attr, ref_attr in pairs
        if getattr(ours, ours_attr) != getattr(component, ref_attr)
    }
    assert differ == {}
    assert (ours.eps, ours.norm) == (component.eps, component.norm)
    if label == "fab-t":
        assert ours.multi_targeted is True  # the reference runs FAB-T (targeted) in the standard version


def test_fab_and_apgd_t_attack_at_most_the_classes_there_are():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    battery = load_battery("standard", eps=0.1)
    for label in ("apgd-t", "fab-t"):
        spec = next(a for a in battery.attacks if a.label == label)
        assert ATTACKS.get(spec.name)(spec, battery.threat, 5).build(model, seed=0).n_target_classes == 4
