"""In-training attacks written by hand (they run every step, so they must be small and exact about the box).

Each keeps x_adv inside the eps-ball and inside [0,1]; the caller decides train/eval mode.
"""

from __future__ import annotations

import torch
from torch import nn


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
) -> torch.Tensor:
    """Madry et al.'s PGD on the cross-entropy: uniform start in the ball, signed steps, projection."""
    x = x.detach()
    x_adv = x + torch.empty_like(x).uniform_(-eps, eps) if random_start else x.clone()
    x_adv = project_linf(x_adv, x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = project_linf(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv.detach()


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float) -> torch.Tensor:
    """Wong et al.'s FGSM with random start: one gradient step from a uniform point in the ball."""
    return pgd_linf(model, x, y, eps=eps, alpha=alpha, steps=1, random_start=True)


def trades_kl(model: nn.Module, x: torch.Tensor, *, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """TRADES inner maximisation: ascend KL(p(x) || p(x')) from x + 0.001 N(0, I) (Zhang et al. 2019)."""
    x = x.detach()
    with torch.no_grad():
        p_clean = torch.softmax(model(x), dim=1)
    x_adv = project_linf(x + 0.001 * torch.randn_like(x), x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        kl = nn.functional.kl_div(torch.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(kl, x_adv)
        x_adv = project_linf(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv.detach()
