"""Masks on Conv/Linear weights (torch.nn.utils.prune re-parametrisations) and the effective weight they give.

Every count in robustprune is taken on the *effective* weight (weight_orig * weight_mask): `model.parameters()`
yields the dense `weight_orig`, and counting zeros there would report ~0 % sparsity (ecosystem.md §2).
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from robustprune.errors import UsageError
from robustprune.models.modes import eval_mode
from robustprune.models.state import fold_pruning_pairs

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) for every Conv1d/2d/3d and Linear module, in `named_modules` order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


def _is_masked(module: nn.Module, name: str = "weight") -> bool:
    return hasattr(module, name + "_orig") and hasattr(module, name + "_mask")


def effective_weight(module: nn.Module) -> Tensor:
    """The weight the forward pass uses, detached: weight_orig * weight_mask for pruned modules, else `weight`.

    Recomputed from orig and mask rather than read from `module.weight`, which prune's pre-hook refreshes only
    on the next forward (stale right after an optimizer step).
    """
    with torch.no_grad():
        if _is_masked(module):
            orig, mask = module.weight_orig, module.weight_mask
            return (orig * mask.to(orig.dtype)).detach()
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor):
            raise UsageError(f"{type(module).__name__} has no weight tensor; only Conv and Linear layers are prunable")
        return weight.detach()


def _prunable_by_name(model: nn.Module) -> dict[str, nn.Module]:
    modules = dict(prunable_modules(model))
    if not modules:
        raise UsageError("the model has no Conv1d/2d/3d or Linear layer: nothing is prunable")
    return modules


def _check_mask(name: str, mask: Any, weight: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise UsageError(f"mask for {name!r} is a {type(mask).__name__}, expected a torch.Tensor")
    if tuple(mask.shape) != tuple(weight.shape):
        raise UsageError(f"mask for {name!r} has shape {list(mask.shape)} but the weight has {list(weight.shape)}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise UsageError(f"mask for {name!r} must be bool or hold only 0 and 1")
    return mask.to(device=weight.device, dtype=torch.bool)


def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Attach `masks` (module name -> bool/{0,1} tensor) so forward and training use weight * mask.

    The given mask *replaces* any earlier one (callers combine first if they want an intersection): an already
    pruned module is `prune.remove`d, which bakes orig*old_mask into the weight, then masked again. Previously
    pruned entries therefore restart from exactly 0 if the new mask revives them. Parameter identity survives
    (prune reuses the same nn.Parameter), so an optimizer built earlier keeps working. Modules absent from
    `masks` are left as they are.
    """
    modules = _prunable_by_name(model)
    unknown = sorted(set(masks) - set(modules))
    if unknown:
        raise UsageError(f"masks name unknown prunable layers {unknown}; prunable: {', '.join(modules)}")
    checked = {name: _check_mask(name, mask, effective_weight(modules[name])) for name, mask in masks.items()}
    for name, mask in checked.items():  # validate everything before touching the model
        module = modules[name]
        if _is_masked(module):
            prune.remove(module, "weight")
        prune.custom_from_mask(module, "weight", mask)


def current_masks(model: nn.Module) -> dict[str, Tensor]:
    """Bool masks for every prunable layer: the `weight_mask` buffer if pruned, else nonzero of the weight."""
    out: dict[str, Tensor] = {}
    for name, module in prunable_modules(model):
        if _is_masked(module):
            out[name] = module.weight_mask.detach().to(torch.bool).clone()
        else:
            out[name] = effective_weight(module) != 0
    return out


def remove_masks(model: nn.Module) -> None:
    """Make all torch.nn.utils.prune pruning permanent (plain parameters holding zeros), e.g. before saving."""
    for module in model.modules():
        hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        for hook in hooks:  # a PruningContainer covers one tensor; remove() walks the whole container
            prune.remove(module, hook._tensor_name)


def masked_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A detached copy of `model`'s state as (effective tensors, bool masks keyed "module.param"): every pruned
    parameter, weights and the bias / BatchNorm masks of structured pruning alike, so `load_masked_state` can put
    back exactly this model whatever masks it carries now."""
    folded, masks = fold_pruning_pairs(model.state_dict())
    return (
        {key: value.detach().clone() for key, value in folded.items()},
        {key: mask.detach().to(torch.bool).clone() for key, mask in masks.items()},
    )


def load_masked_state(model: nn.Module, state: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
    """Make `model` (same architecture) hold `state` under `masks` (see masked_state): its current masks are made
    permanent first, so masks added since the state was taken do not survive. Parameter objects are kept, so an
    optimizer built earlier keeps working."""
    remove_masks(model)
    model.load_state_dict(state, strict=True)
    for name, mask in masks.items():
        module_name, _, param = name.rpartition(".")
        module = model.get_submodule(module_name)
        current = getattr(module, param)
        prune.custom_from_mask(module, param, mask.to(device=current.device, dtype=current.dtype))


def check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    """A sparsity as float in [0, 1); anything else is a UsageError (1.0 would delete every weight)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0.0 <= float(sparsity) < 1.0:
        raise UsageError(f"{what} {sparsity!r} is impossible: use a value in [0, 1)")
    return float(sparsity)


@contextlib.contextmanager
def measuring(model: nn.Module) -> Iterator[None]:
    """eval mode + no_grad for a measuring forward pass; every module's mode flag and the `weight` attributes that
    prune's pre-hooks overwrite are restored, so measuring leaves the model exactly as it was."""
    pruned = [
        (m, hook._tensor_name, m.__dict__[hook._tensor_name])
        for m in model.modules()
        for hook in m._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name in m.__dict__
    ]
    try:
        with eval_mode(model, no_grad=True):
            yield
    finally:
        for m, attr, value in pruned:
            setattr(m, attr, value)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32
