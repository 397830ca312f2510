"""Masks on Conv/Linear weights, sparsity accounting (per layer, all parameters, MACs) and the dead-ReLU rate.

Criteria and schedules live in `robustprune.pruning`. Every count here is taken on the *effective* weight
(weight_orig * weight_mask under torch.nn.utils.prune): `model.parameters()` then yields the dense `weight_orig`,
and counting zeros there would report ~0 % sparsity (ecosystem.md §2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from robustprune.errors import UsageError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

__all__ = [
    "PRUNABLE_TYPES",
    "apply_masks",
    "current_masks",
    "dead_relu_rate",
    "effective_weight",
    "fold_pruned_state_dict",
    "fold_pruning_pairs",
    "prunable_modules",
    "remove_masks",
    "sparsity_report",
]


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


def fold_pruning_pairs(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Turn `X.<p>_orig` + `X.<p>_mask` pairs (torch.nn.utils.prune) into `X.<p> = orig * mask`.

    Returns (folded state_dict, masks keyed by parameter name "X.<p>"); other keys pass through in order, so a
    strict load still reports anything unexpected.
    """
    folded: dict[str, Tensor] = {}
    masks: dict[str, Tensor] = {}
    paired = {
        k[: -len("_orig")] for k in state_dict if k.endswith("_orig") and k[: -len("_orig")] + "_mask" in state_dict
    }
    for key, value in state_dict.items():
        if key.endswith("_mask") and key[: -len("_mask")] in paired:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] in paired:
            base = key[: -len("_orig")]
            if base in state_dict:
                raise UsageError(f"state_dict holds both {base!r} and {key!r}: cannot tell which weight is meant")
            mask = state_dict[base + "_mask"]
            if tuple(mask.shape) != tuple(value.shape):
                raise UsageError(
                    f"{base}_mask has shape {list(mask.shape)} but {key} has {list(value.shape)}; "
                    "the state_dict is inconsistent, re-save it"
                )
            folded[base] = value * mask.to(value.dtype)
            masks[base] = mask
            continue
        folded[key] = value
    return folded, masks


def fold_pruned_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Like fold_pruning_pairs, but returns only weight masks, keyed by module name `X`, as bool.

    Lets a checkpoint saved from a pruned model load into an unpruned instance of the architecture.
    """
    folded, masks = fold_pruning_pairs(state_dict)
    by_module = {}
    for name, mask in masks.items():
        if name == "weight" or name.endswith(".weight"):
            by_module[name[: -len(".weight")] if "." in name else ""] = mask.to(torch.bool)
    return folded, by_module


def _all_parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(numel, nonzero) over every floating-point parameter, using effective tensors for pruned ones."""
    seen: set[int] = set()
    total = nonzero = 0
    with torch.no_grad():
        for module in model.modules():
            for pname, param in module.named_parameters(recurse=False):
                if id(param) in seen or not param.is_floating_point():
                    continue
                seen.add(id(param))
                tensor: Tensor = param
                if pname.endswith("_orig") and _is_masked(module, pname[: -len("_orig")]):
                    tensor = param * getattr(module, pname[: -len("_orig")] + "_mask").to(param.dtype)
                total += tensor.numel()
                nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


class _EvalNoGrad:
    """eval mode + no_grad for a measuring forward; restores every module's training flag and the `weight`
    attributes that prune's pre-hooks overwrite, so measuring leaves the model exactly as it was."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes: list[tuple[nn.Module, bool]] = []
        self.pruned_attrs: list[tuple[nn.Module, str, Any]] = []
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        for m in self.model.modules():
            for hook in m._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name in m.__dict__:
                    self.pruned_attrs.append((m, hook._tensor_name, m.__dict__[hook._tensor_name]))
        self.model.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(*exc)
        for m, mode in self.modes:
            m.training = mode
        for m, attr, value in self.pruned_attrs:
            setattr(m, attr, value)


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _output_positions(model: nn.Module, modules: dict[str, nn.Module], input_shape: tuple[int, ...]) -> dict[str, int]:
    """Output positions per prunable layer for one example (summed over calls if a layer is reused)."""
    if (
        not isinstance(input_shape, tuple | list)
        or not input_shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise UsageError(f"input_shape must be a tuple of positive ints such as (1, 8, 8), got {input_shape!r}")
    positions = dict.fromkeys(modules, 0)

    def hook(name: str) -> Any:
        def record(module: nn.Module, args: Any, output: Tensor) -> None:
            # batch is 1, so numel / out_channels = spatial positions (conv) or leading positions (linear)
            positions[name] += output.numel() // module.weight.shape[0]

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    device, dtype = _model_device_dtype(model)
    try:
        with _EvalNoGrad(model):
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"input_shape {tuple(input_shape)} does not fit the model: {first}") from None
    finally:
        for h in handles:
            h.remove()
    return positions


def sparsity_report(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Achieved sparsity of `model` on its effective weights (DESIGN.md "Sparsity accounting").

    `sparsity` counts only Conv/Linear weights; `all_*` every floating-point parameter (masked tensors counted
    once, as orig*mask). MACs are per example; a layer's effective MACs = dense MACs * its weight density, i.e.
    output positions * nonzero weights. MACs need `input_shape` (C, H, W) and are None without it.
    """
    modules = _prunable_by_name(model)
    positions = _output_positions(model, modules, tuple(input_shape)) if input_shape is not None else None
    layers: list[dict[str, Any]] = []
    for name, module in modules.items():
        weight = effective_weight(module)
        numel, nonzero = weight.numel(), int(torch.count_nonzero(weight))
        row: dict[str, Any] = {
            "name": name,
            "type": type(module).__name__,
            "shape": list(weight.shape),
            "numel": numel,
            "nonzero": nonzero,
            "sparsity": 1.0 - nonzero / numel if numel else 0.0,
            "macs_dense": None,
            "macs_effective": None,
        }
        if positions is not None:
            # weight.numel()/out_channels = in_ch/groups * prod(kernel) for conv, in_features for linear
            row["macs_dense"] = positions[name] * numel
            row["macs_effective"] = positions[name] * nonzero
        layers.append(row)
    prunable = sum(r["numel"] for r in layers)
    prunable_nonzero = sum(r["nonzero"] for r in layers)
    all_params, all_nonzero = _all_parameter_counts(model)
    return {
        "sparsity": 1.0 - prunable_nonzero / prunable if prunable else 0.0,
        "prunable_params": prunable,
        "prunable_nonzero": prunable_nonzero,
        "all_params": all_params,
        "all_nonzero": all_nonzero,
        "all_sparsity": 1.0 - all_nonzero / all_params if all_params else 0.0,
        "compression_ratio": all_params / all_nonzero if all_nonzero else None,
        "macs_dense": sum(r["macs_dense"] for r in layers) if positions is not None else None,
        "macs_effective": sum(r["macs_effective"] for r in layers) if positions is not None else None,
        "layers": layers,
    }


def dead_relu_rate(
    model: nn.Module, x: Tensor, batch_size: int = 256, mode: Literal["dynamic", "always"] = "dynamic"
) -> float:
    """Dead-neuron rate of the `nn.ReLU` modules of `model` on inputs `x` (N, ...).

    mode="dynamic" is algorithms.md §4.4(b)'s DNR = (1/(|D|·|U|)) Σ_x Σ_u 1[ReLU(z_u(x)) = 0]: the share of
    (example, unit) pairs whose ReLU output is exactly 0. mode="always" is the share of units that are 0 for
    *every* example of `x`. A unit is one element of a ReLU output (conv channels count per spatial position);
    a ReLU module called k times per forward contributes k sets of units. Measured in eval mode under no_grad
    (no BatchNorm statistics change); functional `F.relu` calls are not seen.
    """
    if mode not in ("dynamic", "always"):
        raise UsageError(f"mode must be 'dynamic' or 'always', got {mode!r}")
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] == 0:
        raise UsageError("dead_relu_rate needs a non-empty tensor of examples (N, ...)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive int, got {batch_size!r}")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise UsageError("the model has no nn.ReLU module: the dead-neuron rate is undefined")
    zeros = total = 0
    always: list[Tensor] = []  # per (module call) units: dead on every example so far
    call = [0]

    def record(module: nn.Module, args: Any, output: Tensor) -> None:
        nonlocal zeros, total
        is_zero = output == 0
        zeros += int(is_zero.sum())
        total += is_zero.numel()
        if mode == "always":
            dead = is_zero.all(dim=0)
            if call[0] < len(always):
                always[call[0]] &= dead
            else:
                always.append(dead)
            call[0] += 1

    handles = [m.register_forward_hook(record) for m in relus]
    device, dtype = _model_device_dtype(model)
    try:
        with _EvalNoGrad(model):
            for start in range(0, x.shape[0], batch_size):
                call[0] = 0
                model(x[start : start + batch_size].to(device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    if mode == "always":
        units = sum(a.numel() for a in always)
        return sum(int(a.sum()) for a in always) / units if units else math.nan
    return zeros / total if total else math.nan
