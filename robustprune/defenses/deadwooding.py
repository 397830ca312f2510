"""Deadwooding (Kaur, Fioretto, Salekin; arXiv 2202.05226) — a RECONSTRUCTION, not the published algorithm.

What is verified (algorithms.md §1): the abstract (global pruning cast as a constrained problem solved with a
Lagrangian dual method, claimed to keep accuracy and adversarial robustness) and the Piras et al. 2024 taxonomy
(`pralab/AdversarialPruningBenchmark`): prune after training, one-shot, global, unstructured, criterion
"solver-based lowest-weight-magnitude", fine-tuning with KD + FGSM. The paper's full text could not be obtained, and
no code was published, so the objective, the constraints, the dual schedule and every default below are ours.

Reconstruction. The student θ starts as a copy of the dense parent (the teacher f_T, frozen). P_s(θ) is the set of the
round(s·N) smallest |θ_i| over all prunable Conv/Linear weights (recomputed every step, the set the final prune
removes; "dead wood"), g(θ) = Σ_{i∈P_s}|θ_i| / Σ_i|θ_i| its share of the L1 mass.
- formulation "mass":      min KD_T(f_θ(x) ‖ f_T(x))·T² + CE(f_θ(x_fgsm), y)   s.t.  g(θ) ≤ δ
- formulation "closeness": min g(θ)  s.t.  KD_T on clean x ≤ tol_clean,  KD_T on x_fgsm ≤ tol_adv  (one λ each)
Lagrangian: objective + Σ_c λ_c·max(0, c(θ) − bound_c). Primal: SGD/Adam steps on θ (the [train] table). Dual ascent
once per epoch: λ_c ← max(0, λ_c + dual_step·v_c), v_c the mean violation over the epoch. Then a hard global magnitude
prune to exactly round(s·N) zeros, then fine-tuning with the mask fixed: KD from the parent on clean x + CE on FGSM
examples. x_fgsm = clip(x + ε·sign ∇_x CE(f_θ(x), y)) is crafted against the current student.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from robustprune.data import Dataset
from robustprune.defenses.base import Artifact, Defense, PruningSpec, register_defense
from robustprune.defenses.perturb import pgd_linf
from robustprune.defenses.pruning_driver import (
    _final_metrics,
    achieved_sparsity,
    check_achieved,
    copy_weights,
    criterion_sparsity,
    prune_to,
)
from robustprune.defenses.train_loop import Callback, StepContext, fit
from robustprune.errors import UsageError
from robustprune.models.modes import eval_mode
from robustprune.sparsity import check_sparsity, prunable_modules

FORMULATIONS = ("mass", "closeness")
RECONSTRUCTION_NOTE = (
    "Deadwooding as reconstructed by robustprune from the abstract of arXiv 2202.05226 and the Piras et al. taxonomy "
    "(prune after training, one-shot global unstructured, solver-based lowest-weight-magnitude, KD + FGSM "
    "fine-tuning); the objective, constraints, dual schedule and defaults are not from the paper"
)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T))·T² (Hinton et al.), batch mean."""
    t = temperature
    return (
        nn.functional.kl_div(
            torch.log_softmax(student / t, dim=1), torch.softmax(teacher / t, dim=1), reduction="batchmean"
        )
        * t
        * t
    )


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """One signed-gradient step of size eps from x (no random start), crafted in eval mode."""
    with eval_mode(model):
        return pgd_linf(model, x, y, eps=eps, alpha=eps, steps=1, random_start=False)


def prunable_weights(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[torch.Tensor]:
    """The effective Conv/Linear weights with autograd attached (weight_orig * mask for masked modules)."""
    out = []
    for name, module in prunable_modules(model):
        if name in exclude:
            continue
        if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
            out.append(module.weight_orig * module.weight_mask)
        else:
            out.append(module.weight)
    return out


def deadwood_mass(weights: list[torch.Tensor], sparsity: float) -> torch.Tensor:
    """g(θ): share of the L1 mass held by the round(s·N) smallest |θ_i| (the set is fixed within the step)."""
    flat = torch.cat([w.flatten() for w in weights]).abs()
    k = round(sparsity * flat.numel())
    if k == 0:
        return flat.sum() * 0.0
    threshold = torch.kthvalue(flat.detach(), k).values
    small = flat <= threshold  # ties at the threshold are all counted: at most a few extra weights
    return (flat * small).sum() / flat.sum().clamp_min(1e-12)


class DualAscent(Callback):
    """Holds the multipliers; accumulates violations per step and does λ ← max(0, λ + s·v) at each epoch's end."""

    def __init__(
        self, names: tuple[str, ...], bounds: dict[str, float], step: float, lambda0: float, update: bool = True
    ) -> None:
        self.names, self.bounds, self.step, self.update = names, bounds, step, update
        self.lambdas = dict.fromkeys(names, lambda0)
        self._sums = dict.fromkeys(names, 0.0)
        self._violation = dict.fromkeys(names, 0.0)
        self._count = 0

    def penalty(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ_c λ_c·max(0, c − bound_c), recording the values for the epoch means."""
        total = next(iter(values.values())).new_zeros(())
        for name in self.names:
            excess = torch.relu(values[name] - self.bounds[name])
            total = total + self.lambdas[name] * excess
            self._sums[name] += float(values[name].detach())
            self._violation[name] += float(excess.detach())
        self._count += 1
        return total

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any]:
        n = max(self._count, 1)
        entry: dict[str, Any] = {}
        for name in self.names:
            v = self._violation[name] / n
            used = self.lambdas[name]
            if self.update:
                self.lambdas[name] = max(0.0, used + self.step * v)
            entry |= {
                f"constraint_{name}": self._sums[name] / n,
                f"bound_{name}": self.bounds[name],
                f"violation_{name}": v,
                f"lambda_{name}_used": used,
                f"lambda_{name}": self.lambdas[name],
            }
        self._sums, self._violation, self._count = dict.fromkeys(self.names, 0.0), dict.fromkeys(self.names, 0.0), 0
        return entry


@register_defense("deadwooding")
class Deadwooding(Defense):
    reconstruction = True  # the paper's text and code could not be read: every result says so (base.Defense)
    defaults = {
        "formulation": "mass",  # "mass" | "closeness" (see the module docstring)
        "temperature": 4.0,  # KD temperature T
        "fgsm_eps": 0.1,  # Linf FGSM radius (pixel units) in the objective / constraints and in fine-tuning
        "delta": 1e-3,  # mass: bound on g(θ)
        "tol_clean": 0.05,  # closeness: bound on KD·T² to the teacher on clean inputs
        "tol_adv": 0.2,  # closeness: bound on KD·T² to the teacher on FGSM inputs
        "dual_step": 50.0,  # s in λ ← max(0, λ + s·v); scale-dependent (g is a ratio, KD is in nats·T²)
        "lambda0": 0.0,
        "finetune_epochs": 5,
        "finetune_lr": 0.001,
    }

    def validate(self) -> None:
        s, where = self.settings, f"recipe {self.recipe.name!r}"
        if s["formulation"] not in FORMULATIONS:
            raise UsageError(f"{where}: formulation {s['formulation']!r} is not one of {', '.join(FORMULATIONS)}")
        for key in ("temperature", "finetune_lr"):
            if not float(s[key]) > 0:
                raise UsageError(f"{where}: {key} must be > 0, got {s[key]}")
        for key in ("fgsm_eps", "delta", "tol_clean", "tol_adv", "dual_step", "lambda0"):
            if float(s[key]) < 0:
                raise UsageError(f"{where}: {key} must be >= 0, got {s[key]}")
        if int(s["finetune_epochs"]) < 0:
            raise UsageError(f"{where}: finetune_epochs must be >= 0, got {s['finetune_epochs']}")
        pruning = self.recipe.pruning
        if pruning and (pruning.criterion != "global_magnitude" or pruning.schedule != "one_shot" or pruning.reinit):
            raise UsageError(
                f"{where}: deadwooding prunes one-shot by global magnitude itself; its [pruning] table "
                "may only set exclude"
            )

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
        if parent is None:
            raise UsageError("deadwooding needs a dense parent (the teacher; its recipe sets needs_parent = true)")
        sparsity = check_sparsity(sparsity)
        s = self.settings
        spec = PruningSpec(
            criterion="global_magnitude",
            schedule="one_shot",
            exclude=self.recipe.pruning.exclude if self.recipe.pruning else (),
        )
        exclude = tuple(spec.exclude)
        # The share of the eligible weights to prune so that the headline sparsity (excluded layers included) hits
        # the target: the dead-wood set P_s is exactly what prune_to removes at the end.
        share = criterion_sparsity(model, spec, sparsity) if sparsity > 0 else 0.0
        copy_weights(parent, model)  # the student starts as the parent
        teacher = copy.deepcopy(parent).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        temperature, eps = float(s["temperature"]), float(s["fgsm_eps"])

        if s["formulation"] == "mass":
            dual = DualAscent(("mass",), {"mass": float(s["delta"])}, float(s["dual_step"]), float(s["lambda0"]))
        else:
            dual = DualAscent(
                ("kd_clean", "kd_adv"),
                {"kd_clean": float(s["tol_clean"]), "kd_adv": float(s["tol_adv"])},
                float(s["dual_step"]),
                float(s["lambda0"]),
            )

        def lagrangian(net: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
            x_adv = fgsm(net, x, y, eps) if eps > 0 else x
            logits = net(x)
            mass = deadwood_mass(prunable_weights(net, exclude), share)
            with torch.no_grad():
                t_clean = teacher(x)
            if s["formulation"] == "mass":
                objective = kd_loss(logits, t_clean, temperature) + nn.functional.cross_entropy(net(x_adv), y)
                return objective + dual.penalty({"mass": mass})
            with torch.no_grad():
                t_adv = teacher(x_adv)
            values = {
                "kd_clean": kd_loss(logits, t_clean, temperature),
                "kd_adv": kd_loss(net(x_adv), t_adv, temperature),
            }
            return mass + dual.penalty(values)

        log = [
            e | {"phase": "dual"}
            for e in fit(
                model, train, val, self.recipe.train, loss=lagrangian, callbacks=[dual], seed=seed, progress=progress
            )
        ]
        with torch.no_grad():
            mass_before = float(deadwood_mass(prunable_weights(model, exclude), share))
        events: list[dict[str, Any]] = [{"event": "start_from_parent", "sparsity": achieved_sparsity(parent)}]
        if sparsity > 0:
            prune_to(model, spec, sparsity)  # hard one-shot global magnitude prune, exact count
            events.append(
                {
                    "event": "prune",
                    "target": sparsity,
                    "achieved": achieved_sparsity(model),
                    "deadwood_mass_before": mass_before,
                }
            )

        frozen = DualAscent(dual.names, dual.bounds, 0.0, 0.0, update=False)  # logs the constraints, λ stays fixed
        frozen.lambdas = dict(dual.lambdas)

        def finetune(net: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
            x_adv = fgsm(net, x, y, eps) if eps > 0 else x
            logits, adv_logits = net(x), net(x_adv)
            with torch.no_grad():
                t_clean, t_adv = teacher(x), teacher(x_adv)
                if s["formulation"] == "mass":
                    frozen.penalty({"mass": deadwood_mass(prunable_weights(net, exclude), share)})
                else:
                    frozen.penalty(
                        {
                            "kd_clean": kd_loss(logits, t_clean, temperature),
                            "kd_adv": kd_loss(adv_logits, t_adv, temperature),
                        }
                    )
            return kd_loss(logits, t_clean, temperature) + nn.functional.cross_entropy(adv_logits, y)

        ft_spec = dataclasses.replace(self.recipe.train, epochs=int(s["finetune_epochs"]), lr=float(s["finetune_lr"]))
        log += [
            e | {"phase": "finetune"}
            for e in fit(
                model, train, val, ft_spec, loss=finetune, callbacks=[frozen], seed=seed + 1, progress=progress
            )
        ]
        for i, entry in enumerate(log):  # one running epoch count across both phases; the phase's own stays
            entry["phase_epoch"], entry["epoch"] = entry["epoch"], i + 1
        achieved = check_achieved(model, sparsity)
        extra = {
            "reconstruction": RECONSTRUCTION_NOTE,
            "formulation": s["formulation"],
            "lambdas": dict(dual.lambdas),
            "deadwood_mass_before_prune": mass_before,
            "pruning": spec.to_dict(),
            "pruning_defaulted": False,
            "pruning_events": events,
            "target_sparsity": sparsity,
            "achieved_sparsity": achieved,
            "final": _final_metrics(model, val, self.recipe),
            "settings": dict(s),
        }
        return Artifact(model=model.eval(), log=log, extra=extra)
