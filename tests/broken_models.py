"""Models built to break evaluations, and the correct adaptive attack against each (the tests' own reference).

Shared by tests/scoring/health/test_checks.py, tests/scoring/test_broken_panel.py and bench/broken_panel.py.
The reference attacks use torchattacks, not robustprune's attacks, so that robustprune is measured against an
attack it did not write: BPDA through the quantizer, PGD on the logits before scaling or softmax, EOT-PGD on
noise.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torchattacks
from torch import nn
from torch.nn.utils import prune

from robustprune.attacks.battery import predict
from robustprune.data import Dataset
from robustprune.defenses.train_loop import TrainSpec, fit
from robustprune.sparsity.criteria import global_magnitude
from robustprune.sparsity.masks import apply_masks


class Softmax(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inner(x), dim=1)


class Scaled(nn.Module):
    """Logits times a constant: the same predictions, a saturated softmax for large factors."""

    def __init__(self, inner: nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


class Quantize(nn.Module):
    """Rounds the input to `levels` + 1 grey values: a zero derivative almost everywhere. `straight_through`
    gives the BPDA version (the same forward pass, the identity's gradient)."""

    def __init__(self, levels: int, straight_through: bool = False) -> None:
        super().__init__()
        self.levels, self.straight_through = levels, straight_through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rounded = torch.round(x * self.levels) / self.levels
        return x + (rounded - x).detach() if self.straight_through else rounded


class Noisy(nn.Module):
    def __init__(self, inner: nn.Module, sigma: float) -> None:
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + self.sigma * torch.randn_like(x))


class Detached(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.detach())


class NumpyFlattened(nn.Module):
    """Takes its input through numpy, flattened: the graph is cut, and no straight-through version can rejoin it (the
    tensor that comes back has another shape than the one that left), so nothing but gradient-free attacks reach it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.tensor(x.detach().cpu().numpy().reshape(len(x), -1), device=x.device)
        return self.inner(flat.view_as(x))


class InputDropout(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.dropout = inner, nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.dropout(x))


class Purifying(nn.Module):
    """Takes a gradient inside its forward pass, as test-time defenses do (the step itself is zero here)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = x.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.inner(z).logsumexp(dim=1).sum(), z)
        return self.inner(x - 0.0 * grad)


class NaNGradient(nn.Module):
    """Adds 0 * sqrt(0): the output is untouched, the input gradient is NaN."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + 0 * torch.sqrt(x - x.detach()))


class Oscillating(nn.Module):
    """Logits scaled by a positive factor that oscillates wildly with the input: same predictions, a loss that
    jumps under imperceptible noise."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * (1 + 0.9 * torch.sin(1e4 * x.flatten(1).sum(dim=1, keepdim=True)))


def bn_dropout_cnn() -> nn.Module:
    """A small CNN with BatchNorm and Dropout (to be trained, then handed over in train mode)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(16 * 64, 10),
    )


def trained_bn_dropout_cnn(train: Dataset, val: Dataset) -> nn.Module:
    """bn_dropout_cnn trained 4 epochs on digits (seeded), returned in eval mode."""
    torch.manual_seed(0)
    model = bn_dropout_cnn()
    spec = TrainSpec(epochs=4, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0.0, probe_steps=2)
    fit(model, train, val, spec, seed=0)
    return model.eval()


def pruned(model: nn.Module, sparsity: float) -> nn.Module:
    model = copy.deepcopy(model)
    apply_masks(model, global_magnitude(model, sparsity))
    return model.eval()


def unapplied_mask(model: nn.Module) -> nn.Module:
    """A torch.nn.utils.prune mask whose forward hook was removed: the mask says pruned, the forward pass uses the
    dense weight (what a hand-written pruning loop that forgets `weight * mask` produces)."""
    model = copy.deepcopy(model)
    layer = next(m for m in model.modules() if isinstance(m, nn.Linear))
    prune.l1_unstructured(layer, "weight", amount=0.5)
    layer._forward_pre_hooks.clear()
    layer.weight = layer.weight_orig.detach().clone()
    return model.eval()


def reference_robust(
    attacked: nn.Module,
    judged: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 50,
    restarts: int = 2,
    eot_iter: int = 0,
    n_passes: int = 1,
) -> int:
    """Examples still correct on `judged` after Linf PGD (random start, `restarts` seeds) crafted on `attacked`
    (EOT-PGD when `eot_iter` > 0); a verdict over `n_passes` passes for a randomized model."""
    attacked, judged = attacked.eval(), judged.eval()
    alive = predict(judged, x, y, batch_size=256, n_passes=n_passes).correct.copy()
    for restart in range(restarts):
        torch.manual_seed(1000 + restart)
        if eot_iter:
            attack = torchattacks.EOTPGD(attacked, eps=eps, alpha=eps / 8, steps=steps, eot_iter=eot_iter)
        else:
            attack = torchattacks.PGD(attacked, eps=eps, alpha=eps / 8, steps=steps, random_start=True)
        x_adv = attack(x, y)
        assert float((x_adv - x).abs().max()) <= eps + 1e-6
        alive &= predict(judged, x_adv, y, batch_size=256, n_passes=n_passes).correct
    return int(np.sum(alive))
