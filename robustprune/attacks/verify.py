"""Checks every adversarial example before it may count: finite, inside [0,1], inside the eps-ball."""

from __future__ import annotations

import torch

from robustprune.config import ThreatModel
from robustprune.errors import VerificationError

NORM_TOLERANCE = 1e-6


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (x_adv.double() - x.double()).flatten(1)
    if norm == "Linf":
        return delta.abs().amax(dim=1) if delta.shape[1] else torch.zeros(len(x), dtype=torch.float64, device=x.device)
    return delta.norm(p=2, dim=1)


def verify_adversarial(
    label: str, x_adv: torch.Tensor, x: torch.Tensor, threat: ThreatModel, index: torch.Tensor
) -> torch.Tensor:
    """Raise VerificationError naming the attack and example on any violation; return the per-example norms."""
    if x_adv.shape != x.shape:
        raise VerificationError(f"attack {label!r} returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}")
    flat = x_adv.flatten(1)
    bad = ~torch.isfinite(flat).all(dim=1)
    _raise_first(label, bad, index, "a non-finite value")
    bad = (flat < 0).any(dim=1) | (flat > 1).any(dim=1)
    _raise_first(label, bad, index, "a value outside [0,1]")
    norms = perturbation_norms(x_adv, x, threat.norm)
    bad = norms > threat.eps + NORM_TOLERANCE
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise VerificationError(
            f"attack {label!r} returned example {int(index[first])} with {threat.norm} perturbation "
            f"{float(norms[first]):.8g} > eps {threat.eps:g} + {NORM_TOLERANCE:g}; it is not counted"
        )
    return norms


def _raise_first(label: str, bad: torch.Tensor, index: torch.Tensor, what: str) -> None:
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise VerificationError(f"attack {label!r} returned example {int(index[first])} with {what}; it is not counted")


def project(x_adv: torch.Tensor, x: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """`x_adv` moved to the nearest point of the threat model's ball around `x` and of the box [0, 1] (for an
    attack's output that rounding, not the attack, carried just outside)."""
    delta = (x_adv - x).flatten(1)
    if threat.norm == "Linf":
        delta = delta.clamp(-threat.eps, threat.eps)
    else:
        norms = delta.norm(dim=1, keepdim=True)
        delta = delta * torch.clamp(threat.eps / norms.clamp_min(1e-30), max=1.0)
    return (x + delta.view_as(x)).clamp(0, 1)
