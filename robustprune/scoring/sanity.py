"""Evaluation sanity checks run before attacking (evaluation.md S1-S3, S7): findings become result warnings."""

from __future__ import annotations

import torch
from torch import nn

from robustprune.scoring.result import Finding


def check_probability_output(logits: torch.Tensor) -> Finding | None:
    """S1: outputs that already are (log-)probabilities make softmax-based losses and confidences wrong."""
    out = logits.detach().double()
    if out.numel() == 0:
        return None
    rows_sum_to_one = torch.allclose(out.sum(dim=1), torch.ones(len(out), dtype=out.dtype), atol=1e-5)
    if out.min() > -1e-5 and out.max() < 1 + 1e-5 and rows_sum_to_one:
        return Finding(
            "S1",
            "the model returns probabilities, not logits: remove its final softmax "
            "(attack losses and confidences assume logits)",
        )
    if out.max() <= 1e-6 and torch.allclose(out.exp().sum(dim=1), torch.ones(len(out), dtype=out.dtype), atol=1e-5):
        return Finding("S1", "the model returns log-probabilities, not logits: remove its final log_softmax")
    return None


@torch.no_grad()
def check_determinism(model: nn.Module, x: torch.Tensor, n_passes: int = 5) -> Finding | None:
    """S2: a forward pass that changes between calls is a randomized defense and must be scored as one."""
    outs = [torch.nn.functional.normalize(model(x).double().flatten(1), dim=1) for _ in range(n_passes)]
    spread = max(float((o - outs[0]).norm(dim=1).max()) for o in outs)
    if spread > 1e-4:
        return Finding(
            "S2",
            f"the forward pass is not deterministic (normalized logits differ by up to {spread:.3g} "
            "over 5 passes); scored as a randomized model, each verdict over repeated passes",
        )
    return None


def check_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Finding | None:
    """S7: zero or non-finite input gradients hide a model from gradient attacks (gradient masking)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        try:
            (grad,) = torch.autograd.grad(loss, x)
        except RuntimeError as exc:
            return Finding("S6", f"no gradient reaches the input ({exc}); gradient attacks cannot work")
    per_sample = grad.flatten(1).abs().sum(dim=1)
    if not torch.isfinite(per_sample).all():
        return Finding("S7", "input gradients contain NaN or Inf: gradient attacks are unreliable on this model")
    zero = float((per_sample == 0).double().mean())
    if zero > 0:
        return Finding(
            "S7",
            f"{zero:.1%} of examples have an exactly zero input gradient: possible gradient "
            "masking; trust the gradient-free attacks' numbers more",
        )
    return None
