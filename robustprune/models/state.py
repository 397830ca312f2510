"""State dicts written by torch.nn.utils.prune: `X_orig` / `X_mask` pairs folded into effective weights + masks.

Checkpoints store effective weights and masks separately; these helpers read the pairs other tools write.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from robustprune.errors import UsageError


def check_mask(name: str, mask: object, shape: tuple[int, ...] | torch.Size, source: str) -> None:
    """A prune mask is a tensor of the weight's shape holding only 0 and 1 (or bool). Anything else (2, 0.5, -1,
    NaN) would silently rescale or negate weights, so it is refused when read, with where it came from."""
    if not isinstance(mask, Tensor):
        raise UsageError(f"{source}: the prune mask of {name} is a {type(mask).__name__}, not a tensor")
    if tuple(mask.shape) != tuple(shape):
        raise UsageError(
            f"{source}: the prune mask of {name} has shape {list(mask.shape)} but the weight has {list(shape)}"
        )
    if mask.dtype == torch.bool:
        return
    if mask.is_complex() or mask.is_quantized or mask.is_meta or mask.layout != torch.strided:
        raise UsageError(
            f"{source}: the prune mask of {name} is a {mask.dtype} {mask.layout} tensor; save masks as dense bool"
        )
    bad = ~((mask == 0) | (mask == 1))
    if bool(bad.any()):
        value = mask[bad].flatten()[0].item()
        raise UsageError(
            f"{source}: the prune mask of {name} holds {value!r}, but a mask may hold only 0 and 1 (a value like "
            "this would rescale or negate the weights it multiplies); save masks as bool"
        )


def fold_pruning_pairs(
    state_dict: Mapping[str, Tensor], source: str = "state_dict"
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
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
            check_mask(base, mask, value.shape, source)
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


def check_model_masks(model: nn.Module, source: str = "the model") -> None:
    """Every torch.nn.utils.prune mask the model carries is 0/1 of its parameter's shape (check_mask)."""
    for module_name, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if not isinstance(hook, prune.BasePruningMethod):
                continue
            name = hook._tensor_name
            orig = getattr(module, name + "_orig", None)
            shown = f"{module_name}.{name}" if module_name else name
            if isinstance(orig, Tensor):
                check_mask(shown, getattr(module, name + "_mask", None), orig.shape, source)
