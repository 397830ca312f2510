"""State dicts written by torch.nn.utils.prune: `X_orig` / `X_mask` pairs folded into effective weights + masks.

Checkpoints store effective weights and masks separately; these helpers read the pairs other tools write.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from robustprune.errors import UsageError


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
