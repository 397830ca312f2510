"""Structured (channel) pruning: channel groups, exact channel zeroing, channel-norm criteria, channel accounting.

Why masks first and removal later: a closed channel is held at zero by ordinary torch.nn.utils.prune masks, so
training, checkpoints (`__mask__.<module>.<param>`) and every effective-weight count work exactly as for
unstructured pruning; `robustprune.sparsity.compact` removes the closed channels physically at the end.

Definitions used throughout:
- A *channel group* is everything that removing one output channel touches, found with Torch-Pruning's
  DependencyGraph: the producer's weight row and bias, the BatchNorm weight/bias (and running stats) after it, the
  consumers' input columns (a conv channel feeding a Flatten owns H*W Linear columns) and, through residual
  additions, the same channel of every coupled producer. Coupled producers share one group and one channel count.
- A channel is *closed* when every parameter entry of its group is zero (producer rows and biases, BatchNorm weight
  and bias, consumer columns). Then its activation is exactly 0 (BN emits 0*x+0, ReLU(0)=0; a non-affine BN or an
  activation with f(0) != 0 would emit a constant) and in any case the consumers multiply it by zero columns, so
  removing it cannot change any output. A channel with zero weights but a nonzero
  bias or BN shift emits a constant and is *not* closed.
- *Eligible* groups: every Conv/Linear group except those whose channels reach a model output without passing a
  consumer Conv/Linear (the classifier, DIO heads: never remove a logit), those with a producer named in `exclude`
  (exclude keeps a layer's own output channels; its input columns fed by a closed channel are still zeroed, they
  only ever multiply zeros), and those whose channel path holds a layer that mixes channels or cannot be sliced
  (LayerNorm, GroupNorm, grouped or transposed convs, unwrapped parameters).
- *Structured sparsity* (criteria, `channel_sparsity`) is the share of eligible channels that are closed.

input_shape: the graph is traced with one forward pass, so it needs an input shape (C, H, W). Functions take it as
an argument; `None` means `infer_input_shape` (the model's `robustprune_input_shape` attribute, else a shape derived
from the first layer and checked with a forward pass). The groups depend only on channel counts, so any input the
model accepts gives the same groups; MACs and latency depend on the true size, so compaction and latency require it.

Multi-head models with `all_head_logits` (DIO) are traced and checked through that method, so every head is in the
graph even in "random" mode, where one forward pass uses one head.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from robustprune.errors import UsageError
from robustprune.models.layers import Normalize
from robustprune.sparsity.criteria import PRUNING_CRITERIA, _apportion
from robustprune.sparsity.masks import (
    _is_masked,
    check_sparsity,
    measuring,
    model_device_dtype,
    prunable_modules,
    remove_masks,
)

INPUT_SHAPE_ATTR = "robustprune_input_shape"
_PROBE_SIDES = (8, 16, 28, 32, 64, 96, 224)  # square sizes tried, in order, when only the channels are known


# ------------------------------------------------------------------------------------------------ dataclasses


@dataclass(frozen=True)
class ParamSlice:
    """Entries `index` along `dim` of `module.<param>` that belong to one channel.

    role: "producer" (Conv/Linear output row and bias), "passthrough" (depthwise conv row and bias), "norm"
    (BatchNorm weight, bias, running stats) or "consumer" (Conv/Linear input columns). `buffer` marks running
    stats: compaction removes them, masking never needs to (a BN with zero weight and bias emits 0 whatever
    they hold).
    """

    module: str
    param: str
    dim: int
    index: tuple[int, ...]
    role: str
    buffer: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "param": self.param,
            "dim": self.dim,
            "index": list(self.index),
            "role": self.role,
            "buffer": self.buffer,
        }


@dataclass(frozen=True)
class ChannelGroup:
    """The output channels of `layer` and of the producers coupled to it (`layers`, residual additions), with
    `slices[c]`: every parameter slice that removing channel c touches."""

    layer: str
    layers: tuple[str, ...]
    n_channels: int
    slices: tuple[tuple[ParamSlice, ...], ...]

    def touched(self) -> list[dict[str, Any]]:
        """Per touched tensor (module, param, dim, role): how many entries along `dim` one channel owns."""
        seen: dict[tuple[str, str, int, str], int] = {}
        for s in self.slices[0] if self.slices else ():
            seen[(s.module, s.param, s.dim, s.role)] = len(s.index)
        return [{"module": m, "param": p, "dim": d, "role": r, "per_channel": n} for (m, p, d, r), n in seen.items()]

    def to_dict(self) -> dict[str, Any]:
        """A summary (the full slices list is n_channels times longer; use `slices` in code)."""
        return {
            "layer": self.layer,
            "layers": list(self.layers),
            "n_channels": self.n_channels,
            "touched": self.touched(),
        }


@dataclass(frozen=True)
class LayerChannels:
    """One channel group in a ChannelReport: its channels and which of them are closed."""

    layer: str
    layers: tuple[str, ...]
    channels: int
    closed: tuple[int, ...]

    @property
    def n_closed(self) -> int:
        return len(self.closed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "layers": list(self.layers),
            "channels": self.channels,
            "n_closed": self.n_closed,
            "closed": list(self.closed),
        }


@dataclass(frozen=True)
class ChannelReport:
    """Structured sparsity: `sparsity` = closed / channels over the eligible groups; `skipped`: layer -> why it
    has no eligible group (output layer, excluded, unsupported path)."""

    layers: tuple[LayerChannels, ...]
    channels: int
    closed: int
    sparsity: float
    skipped: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "channels": self.channels,
            "closed": self.closed,
            "sparsity": self.sparsity,
            "skipped": dict(self.skipped),
        }


# ------------------------------------------------------------------------------------------------ helpers


def model_outputs(model: nn.Module, x: Tensor) -> Any:
    """Everything the model can output for `x`: every head's logits for a multi-head model exposing
    `all_head_logits` (so no head is left untraced or unchecked), else `model(x)`."""
    heads = getattr(model, "all_head_logits", None)
    return heads(x) if callable(heads) else model(x)


def folded_copy(model: nn.Module) -> nn.Module:
    """A deep copy holding effective weights as plain parameters (prune masks folded); `model` is untouched.

    prune's pre-hook leaves `module.<param>` as orig*mask, a non-leaf tensor that deepcopy refuses; the memo
    hands deepcopy detached copies of those instead (remove_masks recomputes them from orig and mask anyway).
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                value = module.__dict__.get(hook._tensor_name)
                if isinstance(value, Tensor):
                    memo[id(value)] = value.detach().clone()
    dup = copy.deepcopy(model, memo)
    remove_masks(dup)
    return dup


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    if (
        not isinstance(input_shape, tuple | list)
        or not input_shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise UsageError(f"input_shape must be a tuple of positive ints such as (1, 8, 8), got {input_shape!r}")
    return tuple(input_shape)


def _forward_fits(model: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    """None when a zero batch of `input_shape` runs through the model, else the first line of the error."""
    device, dtype = model_device_dtype(model)
    try:
        with measuring(model), torch.random.fork_rng(devices=[]):
            model_outputs(model, torch.zeros((1, *input_shape), device=device, dtype=dtype))
    except (RuntimeError, ValueError, IndexError) as err:
        text = str(err).strip()
        return text.splitlines()[0] if text else type(err).__name__
    return None


def infer_input_shape(model: nn.Module) -> tuple[int, ...]:
    """The per-example input shape for tracing: `model.robustprune_input_shape` if set, else derived.

    Derived: channels C from a non-identity Normalize (its mean) or the first conv; a model whose first layer is
    Linear(F) gets (C, s, s) with s*s*C = F (else (C, 1, F/C)); a conv model gets the first square size in
    8, 16, 28, 32, 64, 96, 224 that a forward pass accepts. Only the channel structure matters for the groups.
    """
    given = getattr(model, INPUT_SHAPE_ATTR, None)
    if given is not None:
        return _check_shape(given)
    layers = prunable_modules(model)
    if not layers:
        raise UsageError("the model has no Conv1d/2d/3d or Linear layer: nothing is prunable")
    channels = None
    for m in model.modules():
        if isinstance(m, Normalize) and not m.identity:
            channels = int(m.mean.numel())
            break
    first = layers[0][1]
    candidates: list[tuple[int, ...]] = []
    if isinstance(first, nn.Linear):
        c = channels or 1
        f = first.in_features
        if f % c == 0:
            side = math.isqrt(f // c)
            candidates.append((c, side, side) if side * side == f // c else (c, 1, f // c))
    elif isinstance(first, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        c = channels or first.in_channels
        spatial = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(first)]
        candidates = [(c, *([s] * spatial)) for s in _PROBE_SIDES]
    for shape in candidates:
        if _forward_fits(model, shape) is None:
            return shape
    raise UsageError(
        f"cannot infer the input shape of {type(model).__name__}: pass input_shape=(C, H, W) or set "
        f"model.{INPUT_SHAPE_ATTR}"
    )


def resolve_input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """`input_shape` checked, or inferred (`infer_input_shape`) when None."""
    return infer_input_shape(model) if input_shape is None else _check_shape(input_shape)


def _check_exclude(exclude: Any, known: set[str]) -> set[str]:
    if isinstance(exclude, str):
        exclude = (exclude,)  # a bare string would otherwise be read as characters
    unknown = sorted(set(exclude) - known)
    if unknown:
        raise UsageError(f"exclude names unknown prunable layers {unknown}; prunable: {', '.join(sorted(known))}")
    return set(exclude)


# ------------------------------------------------------------------------------------------------ analysis


@dataclass
class Analysis:
    """A folded copy of the model, the Torch-Pruning DependencyGraph traced on it, its eligible channel groups and
    the layers without one (`skipped`: layer -> reason). Compaction prunes `folded` through `graph`."""

    folded: nn.Module
    graph: Any  # torch_pruning.DependencyGraph
    groups: list[ChannelGroup]
    skipped: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """The groups (summarised) and skipped layers; the model and graph are left out."""
        return {"groups": [g.to_dict() for g in self.groups], "skipped": dict(self.skipped)}

    def closed(self) -> dict[str, list[int]]:
        """Closed channels per group root: every non-buffer slice of the channel is zero in `folded`."""
        nonzero: dict[tuple[str, str, int], list[bool]] = {}

        def entries(s: ParamSlice) -> list[bool]:
            key = (s.module, s.param, s.dim)
            if key not in nonzero:
                tensor = getattr(self.folded.get_submodule(s.module), s.param).detach()
                dims = [d for d in range(tensor.dim()) if d != s.dim]
                flags = tensor.ne(0).any(dim=dims) if dims else tensor.ne(0)
                nonzero[key] = flags.cpu().tolist()
            return nonzero[key]

        out: dict[str, list[int]] = {}
        for group in self.groups:
            out[group.layer] = [
                c
                for c in range(group.n_channels)
                if not any(entries(s)[i] for s in group.slices[c] if not s.buffer for i in s.index)
            ]
        return out


def _reaches_output(node: Any, ops: Any) -> bool:
    """Whether the node's channels reach a model output without passing a consumer Conv/Linear."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n is not node and n.type in (ops.OPTYPE.CONV, ops.OPTYPE.LINEAR):
            continue  # a consumer: the channel ends in its input columns
        if n.type == ops.OPTYPE.OUTPUT or not n.outputs:
            return True  # tp's trace starts from the outputs, so a node without successors is one
        stack.extend(n.outputs)
    return False


_PASSIVE = ("ELEMENTWISE", "RESHAPE", "CONCAT", "SPLIT", "SLICE", "UNBIND", "EXPAND", "OUTPUT")


def _group_slices(
    graph: Any, group: Any, names: dict[Any, str], n: int
) -> tuple[list[str], list[list[ParamSlice]], str | None]:
    """(producers, per-channel slices, why unsupported or None) for one tp group built with all n root indices."""
    from torch_pruning import ops

    passive = {getattr(ops.OPTYPE, t) for t in _PASSIVE}
    producers: list[str] = []
    per_channel: list[list[ParamSlice]] = [[] for _ in range(n)]
    for item in group:
        dep, idxs, roots = item.dep, item.idxs, item.root_idxs
        target, kind = dep.target.module, dep.target.type
        if kind in passive:
            continue
        name = names.get(target) if isinstance(target, nn.Module) else None
        if name is None:
            return producers, per_channel, f"its channel path holds {type(target).__name__}, which cannot be sliced"
        members: list[tuple[str, int, str, bool]] = []  # (param, dim, role, buffer)
        if kind in (ops.OPTYPE.CONV, ops.OPTYPE.LINEAR):
            if isinstance(target, nn.modules.conv._ConvNd) and (target.transposed or target.groups != 1):
                return producers, per_channel, f"{name} is a grouped or transposed conv (not supported)"
            if dep.handler == graph.get_pruner_of_module(target).prune_out_channels:
                producers.append(name)
                members = [("weight", 0, "producer", False), ("bias", 0, "producer", False)]
            else:
                members = [("weight", 1, "consumer", False)]
        elif kind == ops.OPTYPE.DEPTHWISE_CONV:
            if target.transposed:
                return producers, per_channel, f"{name} is a transposed conv (not supported)"
            members = [("weight", 0, "passthrough", False), ("bias", 0, "passthrough", False)]
        elif kind == ops.OPTYPE.BN:
            members = [("weight", 0, "norm", False), ("bias", 0, "norm", False)]
            members += [("running_mean", 0, "norm", True), ("running_var", 0, "norm", True)]
        else:
            return producers, per_channel, f"{name} ({type(target).__name__}) mixes or cannot slice channels"
        if any(r is None or not 0 <= r < n for r in roots):
            return producers, per_channel, f"Torch-Pruning gave no channel mapping for {name}"
        by_root: list[list[int]] = [[] for _ in range(n)]
        for i, r in zip(idxs, roots, strict=True):
            by_root[r].append(int(i))
        for param, dim, role, buffer in members:
            if getattr(target, param, None) is None:
                continue  # no bias / non-affine BN / no running stats
            for c in range(n):
                if by_root[c]:
                    per_channel[c].append(ParamSlice(name, param, dim, tuple(sorted(by_root[c])), role, buffer))
    return producers, per_channel, None


def analyse(model: nn.Module, input_shape: Sequence[int] | None = None, exclude: Sequence[str] = ()) -> Analysis:
    """Trace a folded copy of `model` with Torch-Pruning and collect its eligible channel groups (module docstring).

    Why a copy: tp needs plain parameters (prune's orig*mask attributes are not module parameters) and switches
    the traced model to eval mode; modules of the copy map back to `model` by qualified name.
    """
    import torch_pruning as tp
    from torch_pruning import ops

    shape = resolve_input_shape(model, input_shape)
    folded = folded_copy(model)
    layers = prunable_modules(folded)
    if not layers:
        raise UsageError("the model has no Conv1d/2d/3d or Linear layer: nothing is prunable")
    excluded = _check_exclude(exclude, {name for name, _ in layers})
    problem = _forward_fits(folded, shape)
    if problem is not None:
        raise UsageError(f"input_shape {shape} does not fit the model: {problem}")
    device, dtype = model_device_dtype(folded)
    example = torch.zeros((1, *shape), device=device, dtype=dtype)
    # tp traces autograd graphs: grad mode on even inside a caller's no_grad/inference_mode
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
        graph = tp.DependencyGraph().build_dependency(
            folded, example_inputs=example, forward_fn=lambda m, x: model_outputs(m, x), verbose=False
        )
    names = {m: n for n, m in folded.named_modules()}
    groups: list[ChannelGroup] = []
    skipped: dict[str, str] = {}
    covered: set[str] = set()
    for name, module in layers:
        if name in covered:
            continue
        node = graph.module2node.get(module)
        if node is None:
            skipped[name] = "the forward pass does not use it"
            continue
        if node.type == ops.OPTYPE.DEPTHWISE_CONV:
            skipped[name] = "a depthwise conv: its channels are those of the layer before it"
            continue
        pruner = graph.get_pruner_of_module(module)
        n = int(pruner.get_out_channels(module))
        tp_group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(n)))
        producers, per_channel, why = _group_slices(graph, tp_group, names, n)
        producers = sorted(set(producers) | {name}, key=[x for x, _ in layers].index)
        covered.update(producers)
        others = [p for p in producers if p != name]
        coupled = f" (coupled with {', '.join(others)})" if others else ""
        if why is None and any(_reaches_output(graph.module2node[folded.get_submodule(p)], ops) for p in producers):
            why = "its outputs are model outputs (a classifier keeps every logit)"
        if why is None and excluded & set(producers):
            why = f"excluded ({', '.join(sorted(excluded & set(producers)))})"
        if why is not None:
            for p in producers:
                skipped[p] = why + coupled
            continue
        groups.append(ChannelGroup(name, tuple(producers), n, tuple(tuple(s) for s in per_channel)))
    return Analysis(folded, graph, groups, skipped)


def channel_groups(
    model: nn.Module, input_shape: Sequence[int] | None = None, exclude: Sequence[str] = ()
) -> list[ChannelGroup]:
    """The eligible channel groups of `model` in module order (one per set of coupled producers)."""
    return analyse(model, input_shape, exclude).groups


# ------------------------------------------------------------------------------------------------ zeroing


def _mask_param(module: nn.Module, param: str, keep: Tensor) -> None:
    """Attach `keep` to module.<param>, intersected with any existing mask (so masks only grow)."""
    if _is_masked(module, param):
        keep = keep & getattr(module, param + "_mask").detach().to(torch.bool)
        prune.remove(module, param)  # bakes orig*old_mask in; the same Parameter object stays
    prune.custom_from_mask(module, param, keep)


def _zero(model: nn.Module, analysis: Analysis, closed: dict[str, Sequence[int]]) -> dict[str, list[int]]:
    by_layer = {p: g for g in analysis.groups for p in g.layers}
    unknown = sorted(set(closed) - set(by_layer))
    if unknown:
        why = [f"{u}: {analysis.skipped[u]}" for u in unknown if u in analysis.skipped]
        raise UsageError(
            f"no prunable channel group for {unknown}{' (' + '; '.join(why) + ')' if why else ''}; "
            f"eligible layers: {', '.join(by_layer) or 'none'}"
        )
    wanted: dict[str, set[int]] = {}
    for layer, channels in closed.items():
        group = by_layer[layer]
        chans = wanted.setdefault(group.layer, set())
        for c in channels:
            try:
                index = operator.index(c)
            except TypeError:
                index = -1
            if isinstance(c, bool) or not 0 <= index < group.n_channels:
                raise UsageError(f"channel {c!r} of {layer} is out of range: it has {group.n_channels} channels")
            chans.add(index)
    groups = {g.layer: g for g in analysis.groups}
    for root, chans in wanted.items():
        if len(chans) >= groups[root].n_channels:
            raise UsageError(
                f"closing all {groups[root].n_channels} channels of {root} would disconnect the network; "
                "keep at least one open"
            )
    keeps: dict[tuple[str, str], Tensor] = {}
    for root, chans in wanted.items():
        for c in sorted(chans):
            for s in groups[root].slices[c]:
                if s.buffer:
                    continue
                key = (s.module, s.param)
                if key not in keeps:
                    module = model.get_submodule(s.module)
                    ref = (
                        getattr(module, s.param + "_orig") if _is_masked(module, s.param) else getattr(module, s.param)
                    )
                    keeps[key] = torch.ones(ref.shape, dtype=torch.bool, device=ref.device)
                index = torch.tensor(s.index, dtype=torch.long, device=keeps[key].device)
                keeps[key].index_fill_(s.dim, index, False)
    for (module_name, param), keep in keeps.items():
        _mask_param(model.get_submodule(module_name), param, keep)
    return {root: sorted(chans) for root, chans in wanted.items()}


def zero_channels(
    model: nn.Module, input_shape: Sequence[int] | None, closed: dict[str, Sequence[int]]
) -> dict[str, list[int]]:
    """Close channels exactly: mask every parameter slice of each channel's group to zero, in place.

    `closed` maps a producer layer name (any layer of a coupled group) to channel indices. Producer rows and
    biases, BatchNorm weight and bias, and consumer input columns are masked with torch.nn.utils.prune
    (intersected with existing masks), so the channel's post-activation output is identically 0, stays 0 through
    further training, and removing it cannot change the outputs. Returns the requested channels per group root.
    """
    return _zero(model, analyse(model, input_shape), closed)


def apply_structured(
    model: nn.Module, input_shape: Sequence[int] | None, masks: dict[str, Tensor]
) -> dict[str, list[int]]:
    """Apply the weight masks of a structured criterion exactly: a channel whose rows are zero in the masks of its
    group's producers is closed with `zero_channels` (bias, BN and consumer columns too). Existing masks are kept
    (intersected), unlike `apply_masks`, which replaces them and would leave biases, BN and consumers open."""
    analysis = analyse(model, input_shape)
    by_layer = {p: g for g in analysis.groups for p in g.layers}
    unknown = sorted(set(masks) - set(by_layer))
    if unknown:
        raise UsageError(
            f"masks name layers without an eligible channel group {unknown}; eligible: {', '.join(by_layer) or 'none'}"
        )
    closed: dict[str, list[int]] = {}
    for group in analysis.groups:
        given = []
        for p in group.layers:
            if p not in masks:
                continue
            mask = masks[p]
            weight = analysis.folded.get_submodule(p).weight
            if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(weight.shape):
                raise UsageError(f"mask for {p!r} must be a tensor of the weight's shape {list(weight.shape)}")
            rows = mask.detach().to(torch.bool).flatten(1)
            if bool((rows.any(1) & ~rows.all(1)).any()):
                raise UsageError(
                    f"mask for {p!r} is not a channel mask (some rows are partly zero); use apply_masks for "
                    "unstructured masks"
                )
            given.append(~rows.any(1).cpu())
        if given:
            zero = torch.stack(given).all(0)
            closed[group.layer] = [int(c) for c in torch.nonzero(zero).flatten()]
    return _zero(model, analysis, {k: v for k, v in closed.items() if v})


# ------------------------------------------------------------------------------------------------ reporting


def channel_sparsity(
    model: nn.Module, input_shape: Sequence[int] | None = None, exclude: Sequence[str] = ()
) -> ChannelReport:
    """Closed channels per eligible group and overall (closed / eligible channels); see the module docstring.
    `exclude` as for the criteria, so a plan's target and its measurement count the same groups."""
    analysis = analyse(model, input_shape, exclude)
    closed = analysis.closed()
    layers = tuple(LayerChannels(g.layer, g.layers, g.n_channels, tuple(closed[g.layer])) for g in analysis.groups)
    channels = sum(layer.channels for layer in layers)
    n_closed = sum(layer.n_closed for layer in layers)
    return ChannelReport(layers, channels, n_closed, n_closed / channels if channels else 0.0, analysis.skipped)


# ------------------------------------------------------------------------------------------------ criteria


def _channel_scores(analysis: Analysis, norm: str) -> list[list[float]]:
    """Per group, per channel: the producers' filter norm per weight (mean |w| for l1, RMS for l2); -1 for
    closed channels, so they rank before every open channel (masks only grow)."""
    stats: dict[str, tuple[list[float], int]] = {}
    for group in analysis.groups:
        for p in group.layers:
            w = analysis.folded.get_submodule(p).weight.detach().flatten(1).double()
            rows = w.abs().sum(1) if norm == "l1" else w.pow(2).sum(1)
            stats[p] = (rows.cpu().tolist(), w.shape[1])
    closed = analysis.closed()
    scores: list[list[float]] = []
    for group in analysis.groups:
        count = sum(stats[p][1] for p in group.layers)
        shut = set(closed[group.layer])
        row: list[float] = []
        for c in range(group.n_channels):
            if c in shut:
                row.append(-1.0)
                continue
            total = sum(
                stats[s.module][0][s.index[0]] for s in group.slices[c] if s.role == "producer" and s.param == "weight"
            )
            row.append(total / count if norm == "l1" else math.sqrt(total / count))
        scores.append(row)
    return scores


def _filter_masks(analysis: Analysis, pruned: list[list[int]]) -> dict[str, Tensor]:
    """Weight masks of every eligible producer: False on the rows of pruned channels, True elsewhere."""
    masks: dict[str, Tensor] = {}
    for group, chans in zip(analysis.groups, pruned, strict=True):
        for p in group.layers:
            w = analysis.folded.get_submodule(p).weight
            mask = torch.ones(w.shape, dtype=torch.bool, device=w.device)
            for c in chans:
                for s in group.slices[c]:
                    if s.module == p and s.param == "weight" and s.role == "producer":
                        mask[list(s.index)] = False
            masks[p] = mask
    return masks


def _structured(
    model: nn.Module, sparsity: float, exclude: Sequence[str], input_shape: Sequence[int] | None, norm: str, glob: bool
) -> dict[str, Tensor]:
    s = check_sparsity(sparsity)
    analysis = analyse(model, input_shape, exclude)
    if not analysis.groups:
        reasons = "; ".join(f"{k}: {v}" for k, v in analysis.skipped.items())
        raise UsageError(f"no layer has prunable channels ({reasons}); lower exclude or prune unstructured")
    scores = _channel_scores(analysis, norm)
    sizes = [g.n_channels for g in analysis.groups]
    counts = channel_budget(analysis.groups, s, glob)
    pruned: list[list[int]] = [[] for _ in sizes]
    if glob:
        n_prune = counts[0]
        # the best channel of each group is never a candidate, so no layer is emptied
        keep = {(gi, max(range(n), key=lambda c, gi=gi: scores[gi][c])) for gi, n in enumerate(sizes)}
        entries = [(scores[gi][c], gi, c) for gi, n in enumerate(sizes) for c in range(n) if (gi, c) not in keep]
        for _, gi, c in sorted(entries, key=lambda e: e[0])[:n_prune]:  # stable: ties by position
            pruned[gi].append(c)
    else:
        for gi, (n, k) in enumerate(zip(sizes, counts, strict=True)):
            pruned[gi] = sorted(range(n), key=lambda c, gi=gi: scores[gi][c])[:k]
    return _filter_masks(analysis, pruned)


def channel_budget(groups: Sequence[ChannelGroup], sparsity: float, glob: bool) -> list[int]:
    """How many channels a share `sparsity` closes: [total] for a global ranking, one count per group for a
    layer-wise one (largest remainder, so the total is exact). A share that would empty a layer is a UsageError —
    the criteria never do, so the pruning driver asks here before training instead of missing its target after."""
    sizes = [g.n_channels for g in groups]
    total = sum(sizes)
    if glob:
        n_prune = round(sparsity * total)
        if n_prune > total - len(sizes):
            raise UsageError(
                f"channel sparsity {sparsity} removes {n_prune} of {total} channels, but each of the {len(sizes)} "
                f"layers keeps at least one: use at most {(total - len(sizes)) / total:.4f}"
            )
        return [n_prune]
    counts = _apportion(sizes, sparsity)
    for group, n, k in zip(groups, sizes, counts, strict=True):
        if k > n - 1:
            raise UsageError(
                f"a channel share of {sparsity} would close all {n} channels of {group.layer}: use at most "
                f"{(n - 1) / n:.4f}, or exclude that layer"
            )
    return counts


def _register(name: str, norm: str, glob: bool, doc: str) -> Callable[..., dict[str, Tensor]]:
    def criterion(
        model: nn.Module,
        sparsity: float,
        generator: torch.Generator | None = None,
        *,
        exclude: Sequence[str] = (),
        input_shape: Sequence[int] | None = None,
    ) -> dict[str, Tensor]:
        return _structured(model, sparsity, exclude, input_shape, norm, glob)

    criterion.__name__ = criterion.__qualname__ = name
    criterion.__doc__ = doc
    criterion.structured = True  # type: ignore[attr-defined]  callers apply these with apply_structured
    PRUNING_CRITERIA.add(name, criterion)
    return criterion


_COMMON = """

`sparsity` is the share of eligible channels to close (coupled residual producers count once). Scores are the
producers' filter norms divided by the number of weights (mean |w| for l1, RMS for l2), so layers with a large
fan-in are not favoured by their size; already-closed channels score -1 and go first, so masks only grow. Every
layer keeps at least one channel. Returns weight masks (rows of closed channels False) for every eligible layer;
apply them with `apply_structured`, which also masks biases, BatchNorm and consumer columns. `generator` is
unused (the ranking is deterministic); `input_shape` as in `infer_input_shape` when None.
"""

channel_l1 = _register(
    "channel_l1", "l1", True, "Global channel ranking by mean |w| per filter: exactly round(s * channels)." + _COMMON
)
channel_l2 = _register(
    "channel_l2", "l2", True, "Global channel ranking by RMS of each filter: exactly round(s * channels)." + _COMMON
)
layerwise_channel_l1 = _register(
    "layerwise_channel_l1",
    "l1",
    False,
    "The same share of each layer's channels by mean |w| (each layer within one channel of s * n)." + _COMMON,
)
layerwise_channel_l2 = _register(
    "layerwise_channel_l2",
    "l2",
    False,
    "The same share of each layer's channels by RMS (each layer within one channel of s * n)." + _COMMON,
)


def is_structured(criterion: Callable[..., Any]) -> bool:
    """Whether a PRUNING_CRITERIA entry needs `apply_structured` rather than `apply_masks`."""
    return bool(getattr(criterion, "structured", False))
