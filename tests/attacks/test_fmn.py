"""FMN (robustprune.attacks.fmn): finds small verified adversarials on the trained digits MLP, deterministically."""

from __future__ import annotations

import pytest
import torch

from robustprune.attacks.fmn import fmn, perturbation_norm
from robustprune.defenses.perturb import pgd_linf


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_fmn_finds_verified_adversarials(trained_mlp, digits_test, norm):
    x, y = digits_test.x[:120], digits_test.y[:120]
    result = fmn(trained_mlp, x, y, norm=norm, steps=100)
    assert result.found.float().mean() > 0.9
    found = result.found
    with torch.no_grad():
        pred = trained_mlp(result.x_adv).argmax(dim=1)
    assert (pred[found] != y[found]).all()
    actual = perturbation_norm(result.x_adv - x, norm)
    assert torch.allclose(actual[found], result.distance[found], atol=1e-6)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert torch.isinf(result.distance[~found]).all()
    clean_wrong = trained_mlp(x).argmax(dim=1) != y
    assert (result.distance[clean_wrong] == 0).all()


def test_fmn_distances_below_the_eps_pgd_breaks(trained_mlp, digits_test):
    """Where PGD (Linf, eps) breaks an example, FMN's minimal distance is <= eps for most of them."""
    x, y = digits_test.x[:200], digits_test.y[:200]
    eps = 0.1
    torch.manual_seed(0)
    x_pgd = pgd_linf(trained_mlp, x, y, eps=eps, alpha=eps / 4, steps=20)
    with torch.no_grad():
        broken = (trained_mlp(x_pgd).argmax(dim=1) != y) & (trained_mlp(x).argmax(dim=1) == y)
    assert broken.sum() > 20
    distance = fmn(trained_mlp, x, y, norm="Linf").distance
    assert (distance[broken] <= eps + 1e-6).float().mean() >= 0.85


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_fmn_is_deterministic(trained_mlp, digits_test, norm):
    x, y = digits_test.x[:64], digits_test.y[:64]
    a = fmn(trained_mlp, x, y, norm=norm, steps=30, seed=3)
    b = fmn(trained_mlp, x, y, norm=norm, steps=30, seed=3)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.distance, b.distance)


def test_fmn_rejects_bad_settings(trained_mlp, digits_test):
    x, y = digits_test.x[:4], digits_test.y[:4]
    with pytest.raises(ValueError, match="norms"):
        fmn(trained_mlp, x, y, norm="L1")
    with pytest.raises(ValueError, match="steps"):
        fmn(trained_mlp, x, y, steps=0)
