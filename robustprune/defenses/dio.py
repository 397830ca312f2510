"""DIO training (Fang et al., arXiv 2010.12190; algorithms.md §2, loss as in the official code).

    L = (1/L) Σ_l CE(z_l, y) + α·L_o + β·L_d
    L_o = Σ_{i<j} ⟨W_i, W_j⟩_F²                                   (whole head matrices, one scalar per pair)
    L_d = Σ_l mean_{x∈S_l} max(0, τ − min_{k≠y} |z_{l,y} − z_{l,k}| / ‖w_{l,k}‖₂)   (S_l: examples head l gets right)

With `adversarial = true` (the dio_at recipe) every term is computed on x_adv from Linf PGD crafted as the official
`train.py` crafts it: the model in eval mode, and a new random head at every PGD step (advertorch's PGD calls the
random-head forward once per iteration), the heads drawn from a seeded generator. The model is a `DIOModel` (models/dio.py);
it is pruned like any other model by the recipe's [pruning] plan through the shared driver (pruning_driver.py):
its heads are Linear layers, so global criteria rank them with the backbone's weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from robustprune.data import Dataset
from robustprune.defenses.base import Artifact, register_defense
from robustprune.defenses.common import LossDefense
from robustprune.defenses.perturb import pgd_linf
from robustprune.defenses.train_loop import Callback, Loss, StepContext
from robustprune.errors import UsageError
from robustprune.models.dio import DIOModel, dio_model
from robustprune.models.modes import eval_mode


class RandomHeadPerCall(nn.Module):
    """A DIO model whose every forward call uses a head drawn from `generator` (one per call, for the batch)."""

    def __init__(self, model: DIOModel, generator: torch.Generator) -> None:
        super().__init__()
        self.model, self.generator = model, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = int(torch.randint(self.model.n_heads, (1,), generator=self.generator))
        return self.model.head_logits(x, head)


def head_weights(model: DIOModel) -> torch.Tensor:
    """(L, C, d) head matrices as the forward pass uses them (weight_orig * mask when pruned)."""
    weights = []
    for head in model.heads:
        if hasattr(head, "weight_orig") and hasattr(head, "weight_mask"):
            weights.append(head.weight_orig * head.weight_mask)
        else:
            weights.append(head.weight)
    return torch.stack(weights)


def orthogonality_penalty(weights: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} ⟨W_i, W_j⟩_F² for weights of shape (L, C, d)."""
    flat = weights.flatten(1)
    gram = flat @ flat.T
    return torch.triu(gram, diagonal=1).pow(2).sum()


def margin_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, tau: float) -> torch.Tensor:
    """Σ_l mean over the examples head l classifies correctly of max(0, τ − min_{k≠y} |z_y − z_k| / ‖w_k‖)."""
    total = logits.new_zeros(())
    for z, w in zip(logits, weights, strict=True):
        correct = z.argmax(dim=1) == y
        if not correct.any():
            continue  # a head with no correct example contributes nothing (as in the official code)
        z, yc = z[correct], y[correct]
        row_norm = w.norm(dim=1).clamp_min(1e-12)  # ‖w_{l,k}‖ of row k (the code's choice, not ‖w_y − w_k‖)
        dist = (z.gather(1, yc[:, None]) - z).abs() / row_norm
        dist = dist.scatter(1, yc[:, None], float("inf"))
        total = total + torch.relu(tau - dist.min(dim=1).values).mean()
    return total


def dio_objective(
    model: DIOModel, x: torch.Tensor, y: torch.Tensor, *, alpha: float, beta: float, tau: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """The DIO loss on (x, y) and its parts (for logging)."""
    logits = model.all_head_logits(x)
    weights = head_weights(model)
    ce = torch.stack([nn.functional.cross_entropy(z, y) for z in logits]).mean()
    ortho = orthogonality_penalty(weights)
    margin = margin_loss(logits, y, weights, tau)
    total = ce + alpha * ortho + beta * margin
    return total, {"ce": ce.item(), "ortho_penalty": ortho.item(), "margin_loss": margin.item()}


class _PartsAccumulator:
    """Sums of the loss parts since the last epoch end (the loss adds, the epoch-end callback reads and resets)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, parts: dict[str, float]) -> None:
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def pop_means(self) -> dict[str, float]:
        means = {key: value / max(self.count, 1) for key, value in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


class DIOLog(Callback):
    """Per epoch: mean loss parts (ce, ortho_penalty, margin_loss), the end-of-epoch orthogonality penalty and
    every head's validation accuracy."""

    def __init__(self, parts: _PartsAccumulator, val: Dataset) -> None:
        self.parts, self.val = parts, val

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any]:
        entry: dict[str, Any] = self.parts.pop_means()
        model = ctx.model
        with torch.no_grad():
            entry["ortho_penalty_end"] = orthogonality_penalty(head_weights(model)).item()
            per_head = (model.all_head_logits(self.val.x).argmax(dim=2) == self.val.y).double().mean(dim=1)
        entry["head_val_acc"] = per_head.tolist()
        entry["head_val_acc_min"] = float(per_head.min())
        return entry


@register_defense("dio")
class DIO(LossDefense):
    """DIO on any architecture; pruned by the recipe's [pruning] plan through the shared pruning driver."""

    defaults = {
        "heads": 10,
        "alpha": 0.1,  # weight of the orthogonality penalty
        "beta": 0.1,  # weight of the margin loss
        "tau": 0.2,  # margin, in units of logit difference / head-row norm
        "adversarial": False,  # true: DIO + PGD-AT (every term on x_adv)
        "eps": 0.1,  # Linf PGD radius for adversarial = true (pixel units)
        "pgd_steps": 10,
        "pgd_rel_step": 0.25,  # step = rel_step * eps (official: 2/255 for eps 8/255)
    }
    _seed: int = 0  # the run's seed (set by run) for the head draws of adversarial training

    def validate(self) -> None:
        s, where = self.settings, f"recipe {self.recipe.name!r} [settings]"
        if int(s["heads"]) < 1:
            raise UsageError(f"{where} heads must be >= 1, got {s['heads']}")
        for key in ("alpha", "beta", "tau"):
            if float(s[key]) < 0:
                raise UsageError(f"{where} {key} must be >= 0, got {s[key]}")
        if s["adversarial"]:
            self._check_eps()
            self._check_positive("pgd_steps", "pgd_rel_step")

    def build_model(self, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        """`architecture` names a DIO model (dio_digits_cnn) or a plain base (digits_cnn) to put heads on."""
        from robustprune.models import build_model

        arch, heads = self.recipe.architecture, int(self.settings["heads"])
        if arch.startswith("dio_"):
            return build_model(arch, num_classes, input_shape, heads=heads)
        model = dio_model(arch, num_classes, input_shape, heads=heads)
        model.robustprune_model = arch
        return model

    def make_loss(self, train: Dataset) -> Loss:
        s = self.settings
        alpha, beta, tau = float(s["alpha"]), float(s["beta"]), float(s["tau"])
        adversarial, eps, steps = bool(s["adversarial"]), float(s["eps"]), int(s["pgd_steps"])
        step = float(s["pgd_rel_step"]) * eps
        parts = self._parts = _PartsAccumulator()
        generator = torch.Generator().manual_seed(self._seed + 7919)  # head draws, apart from the loop's RNG

        def dio_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
            if adversarial:
                with eval_mode(model, freeze_parameters=True):  # input gradients only
                    x = pgd_linf(RandomHeadPerCall(model, generator), x, y, eps=eps, alpha=step, steps=steps)
            value, logged = dio_objective(model, x, y, alpha=alpha, beta=beta, tau=tau)
            parts.add(logged)
            return value

        return dio_loss

    def make_callbacks(self, train: Dataset, val: Dataset, seed: int) -> Sequence[Callback]:
        parts = getattr(self, "_parts", None) or _PartsAccumulator()
        return (DIOLog(parts, val),)

    def run(
        self,
        model: nn.Module,
        train: Dataset,
        val: Dataset,
        *,
        sparsity: float,
        parent: nn.Module | None,
        seed: int,
        progress: bool = False,
    ) -> Artifact:
        if not isinstance(model, DIOModel):
            raise UsageError(f"the dio defense trains a DIOModel (dio_<architecture>), got {type(model).__name__}")
        self._seed = seed
        artifact = super().run(model, train, val, sparsity=sparsity, parent=parent, seed=seed, progress=progress)
        model.set_mode("random")  # deployed as published: one random head per forward pass
        artifact.extra["dio"] = {
            "heads": model.n_heads,
            "mode": "random",
            "adversarial": bool(self.settings["adversarial"]),
        }
        return artifact
