"""Compaction: physically remove closed channels, turning a structurally masked model into a smaller dense one.

Why a separate step: training and scoring run on the masked model (the masks survive checkpoints); only the
deployed model needs to be small. Removal is exact by construction (a closed channel's whole group is zero, see
`robustprune.sparsity.structured`), and it is still checked: the outputs on a seeded random batch must match the
original's within `tolerance`, else RuntimeError. Unstructured zeros never close a channel, so an unstructured model
compacts to the same size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustprune.sparsity.accounting import sparsity_report
from robustprune.sparsity.masks import measuring, model_device_dtype
from robustprune.sparsity.structured import _check_shape, analyse, model_outputs

TOLERANCE = 1e-5
CHECK_BATCH = 4


@dataclass
class CompactResult:
    """The compacted dense model (no masks) and what compaction changed.

    `removed` counts channels removed per group root layer (coupled residual producers share one entry),
    `params_*` count every floating-point parameter, `macs_*` the dense Conv/Linear MACs per example (what the
    model computes, zeros included), `max_abs_diff` the largest output difference on the check batch.
    """

    model: nn.Module
    removed: dict[str, int]
    removed_indices: dict[str, list[int]]
    channels_before: int
    channels_after: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    max_abs_diff: float

    @property
    def channels_removed(self) -> int:
        return sum(self.removed.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields; the model is summarised by its class name."""
        return {
            "model": type(self.model).__name__,
            "removed": dict(self.removed),
            "removed_indices": {k: list(v) for k, v in self.removed_indices.items()},
            "channels_removed": self.channels_removed,
            "channels_before": self.channels_before,
            "channels_after": self.channels_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "max_abs_diff": self.max_abs_diff,
        }


def _max_abs_diff(a: Any, b: Any) -> float:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            return float("inf")
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return max((_max_abs_diff(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return max((_max_abs_diff(a[k], b[k]) for k in a), default=0.0)
    return 0.0 if a == b else float("inf")


def _outputs(model: nn.Module, x: Tensor) -> Any:
    with measuring(model), torch.random.fork_rng(devices=[]):
        return model_outputs(model, x)


def compact(
    model: nn.Module, input_shape: Sequence[int], *, tolerance: float = TOLERANCE, seed: int = 0
) -> CompactResult:
    """A smaller dense copy of `model` without its closed channels; `model` itself is not changed.

    Steps: fold masks on a deep copy, trace it with Torch-Pruning, find closed channels (every parameter slice
    of the group zero), remove them with `DependencyGraph.get_pruning_group(...).prune()` (a group with every
    channel closed keeps channel 0: layers cannot be empty), then compare outputs (every head for multi-head
    models) on a seeded uniform [0, 1) batch. The copy keeps each module's train/eval flag and requires_grad.
    """
    shape = _check_shape(input_shape)
    training = {name: m.training for name, m in model.named_modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    analysis = analyse(model, shape)
    folded, graph = analysis.folded, analysis.graph
    closed = analysis.closed()
    removed_indices: dict[str, list[int]] = {}
    for group in analysis.groups:
        chans = closed[group.layer]
        if len(chans) == group.n_channels:
            chans = chans[1:]
        if not chans:
            continue
        module = folded.get_submodule(group.layer)
        pruner = graph.get_pruner_of_module(module)
        graph.get_pruning_group(module, pruner.prune_out_channels, chans).prune()
        removed_indices[group.layer] = list(chans)
    _sync_heads(folded)
    for name, m in folded.named_modules():
        m.train(training.get(name, m.training))  # tp's trace switched the copy to eval
    for name, p in folded.named_parameters():
        p.requires_grad_(grads.get(name, p.requires_grad))

    device, dtype = model_device_dtype(model)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((CHECK_BATCH, *shape), generator=generator).to(device=device, dtype=dtype)
    diff = _max_abs_diff(_outputs(model, x), _outputs(folded, x))
    if not diff <= tolerance:
        raise RuntimeError(
            f"compaction changed the outputs: max abs difference {diff:.3g} exceeds {tolerance:g}; a removed channel "
            "was not exactly zero through its path (an activation with f(0) != 0 or a channel-mixing op?)"
        )
    before, after = sparsity_report(model, shape), sparsity_report(folded, shape)
    channels = sum(g.n_channels for g in analysis.groups)
    n_removed = sum(len(v) for v in removed_indices.values())
    return CompactResult(
        model=folded,
        removed={k: len(v) for k, v in removed_indices.items()},
        removed_indices=removed_indices,
        channels_before=channels,
        channels_after=channels - n_removed,
        params_before=int(before["all_params"]),
        params_after=int(after["all_params"]),
        macs_before=int(before["macs_dense"]),
        macs_after=int(after["macs_dense"]),
        max_abs_diff=diff,
    )


def _sync_heads(model: nn.Module) -> None:
    """Keep a multi-head model's recorded feature size (DIOModel.feature_dim) equal to its heads' input size."""
    heads = getattr(model, "heads", None)
    linear_heads = isinstance(heads, nn.ModuleList) and len(heads) and isinstance(heads[0], nn.Linear)
    if linear_heads and isinstance(getattr(model, "feature_dim", None), int):
        model.feature_dim = heads[0].in_features
