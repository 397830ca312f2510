"""A model as verification sees it: alternating affine maps and ReLUs, in float64, proved equal to the model.

The walk records the model's leaf modules in the order one forward pass calls them (forward hooks), and turns each
into exact float64 pieces:
- every layer the tool knows to be affine (Linear, Conv1d/2d/3d, BatchNorm in eval mode, AvgPool, AdaptiveAvgPool,
  robustprune's Normalize, Flatten, Unflatten, Identity, Dropout in eval mode, zero padding) becomes one dense matrix
  and bias, read off the module itself on the unit vectors, so a pruned layer contributes exactly the weights its
  forward pass uses (weight times mask, whether or not the mask was folded in);
- ReLU stays a ReLU;
- MaxPool2d becomes ReLUs too (max(a, b) = relu(a - b) + relu(b) - relu(-b), a tree per window), exact.
Consecutive affine pieces are multiplied into one while the product stays small.

The walk is refused, with a one-line reason, for anything else: a leaf it does not know (a sigmoid, attention, a
custom layer), a leaf called twice or not on its predecessor's output (a residual connection, a branch), a forward
pass doing arithmetic between modules, a network too large for the size guard. Whatever it accepts is then proved:
the composed pieces must give the model's logits on the scored examples (`Network.check_equal`), or nothing is
certified.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustprune.errors import UsageError

# A dense matrix of more entries than this (float64: 8 bytes each) is beyond what bounds are computed for.
MAX_MATRIX_ENTRIES = 40_000_000
MAX_NEURONS = 200_000  # ReLUs in the whole network
EQUAL_RTOL = 1e-4  # the float64 walk against the float32 model, relative to the logits' scale
EQUAL_ATOL = 1e-4

_AFFINE = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.modules.batchnorm._BatchNorm,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.modules.dropout._DropoutNd,
    nn.ZeroPad2d,
)


class NotVerifiable(UsageError):
    """The model is outside what the walk turns into affine maps and ReLUs (one line: what and why)."""


@dataclass
class Affine:
    weight: Tensor  # (out, in) float64
    bias: Tensor  # (out,)

    @functools.cached_property
    def abs_weight(self) -> Tensor:
        """|weight|, which interval bounds use for every example (kept once per network)."""
        return self.weight.abs()


@dataclass
class ReLU:
    size: int


@dataclass
class Network:
    """x (flattened input, float64) -> pieces in order -> logits."""

    pieces: list[Affine | ReLU]
    input_shape: tuple[int, ...]
    num_classes: int

    @property
    def n_relus(self) -> int:
        return sum(p.size for p in self.pieces if isinstance(p, ReLU))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (float64) of a batch of inputs of the model's input shape."""
        z = x.reshape(len(x), -1).double()
        for piece in self.pieces:
            z = z @ piece.weight.T + piece.bias if isinstance(piece, Affine) else z.clamp_min(0)
        return z

    def check_equal(self, model: nn.Module, x: Tensor) -> float:
        """The largest difference of the walk's logits from the model's on `x`; NotVerifiable beyond tolerance."""
        with torch.no_grad():
            theirs = model(x).double().cpu()
            ours = self.forward(x.cpu())
        scale = float(theirs.abs().max()) if theirs.numel() else 0.0
        gap = float((ours - theirs).abs().max()) if theirs.numel() else 0.0
        if not math.isfinite(gap) or gap > EQUAL_ATOL + EQUAL_RTOL * scale:
            raise NotVerifiable(
                f"the layers read off the model do not reproduce its logits (off by {gap:.3g}): its forward pass does "
                "something between or around its modules that the walk cannot see"
            )
        return gap


def _linear_map(module: nn.Module, shape: tuple[int, ...]) -> Affine:
    """The dense matrix and bias of an affine module at this input shape, read off the module on the unit
    vectors in float64 (what its forward pass computes: effective, masked weights included)."""
    size = math.prod(shape)
    probe = _double_copy(module)
    with torch.no_grad():
        zero = probe(torch.zeros((1, *shape), dtype=torch.float64))
        out = zero.numel()
        if out * size > MAX_MATRIX_ENTRIES:
            raise NotVerifiable(
                f"layer {type(module).__name__} maps {size:,} inputs to {out:,} outputs: its dense matrix is beyond "
                f"the size guard ({MAX_MATRIX_ENTRIES:,} entries)"
            )
        columns = []
        for start in range(0, size, 512):
            eye = torch.zeros((min(512, size - start), size), dtype=torch.float64)
            eye[torch.arange(len(eye)), torch.arange(start, start + len(eye))] = 1.0
            columns.append(probe(eye.view(len(eye), *shape)).reshape(len(eye), -1) - zero.reshape(1, -1))
        weight = torch.cat(columns).T.contiguous()
    return Affine(weight, zero.reshape(-1).clone())


def _double_copy(module: nn.Module) -> nn.Module:
    """The module in float64, on the CPU and in eval mode, with its effective weights (prune masks applied) as plain
    tensors."""
    import copy

    clone = copy.copy(module)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    clone._forward_pre_hooks = type(module._forward_pre_hooks)(module._forward_pre_hooks)
    clone._forward_hooks = type(module._forward_hooks)()
    for name, value in list(module._parameters.items()) + list(module._buffers.items()):
        if isinstance(value, Tensor) and value.is_floating_point():
            target = clone._parameters if name in module._parameters else clone._buffers
            target[name] = value.detach().double().cpu()  # bounds are computed on the CPU, wherever the model is
    for name in ("weight", "bias"):  # prune's pre-hook keeps module.<name> as a plain attribute: recompute it
        orig = getattr(module, f"{name}_orig", None)
        mask = getattr(module, f"{name}_mask", None)
        if isinstance(orig, Tensor) and isinstance(mask, Tensor):
            object.__setattr__(clone, name, (orig.detach() * mask.to(orig.dtype)).double().cpu())
    clone._forward_pre_hooks.clear()
    clone.training = False
    return clone


def _maxpool_pieces(module: nn.MaxPool2d, shape: tuple[int, ...]) -> list[Affine | ReLU]:
    """max over each pooling window as a tree of max(a, b) = relu(a - b) + relu(b) - relu(-b), exact."""
    if module.dilation not in (1, (1, 1)) or module.ceil_mode or module.return_indices:
        raise NotVerifiable("MaxPool2d with dilation, ceil_mode or return_indices is not supported")
    c, h, w = shape
    k = _pair(module.kernel_size)
    s = _pair(module.stride or module.kernel_size)
    p = _pair(module.padding)
    out_h, out_w = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    windows = []
    for ch in range(c):
        for i in range(out_h):
            for j in range(out_w):
                cells = [
                    ch * h * w + r * w + q
                    for r in range(i * s[0] - p[0], i * s[0] - p[0] + k[0])
                    for q in range(j * s[1] - p[1], j * s[1] - p[1] + k[1])
                    if 0 <= r < h and 0 <= q < w
                ]
                windows.append(cells)
    size = c * h * w
    # Each level: the current values of every window as linear combinations of the previous layer's outputs.
    current = [[_unit(idx, size) for idx in cells] for cells in windows]
    pieces: list[Affine | ReLU] = []
    dim = size
    while any(len(values) > 1 for values in current):
        rows: list[Tensor] = []
        recombine: list[list[tuple[int, float]]] = []  # per new value: (row, coefficient) of the ReLU outputs
        next_current = []
        for values in current:
            merged = []
            for a_i in range(0, len(values), 2):
                if a_i + 1 < len(values):
                    a, b = values[a_i], values[a_i + 1]
                    base = len(rows)
                    rows += [a - b, b, -b]
                    merged.append(len(recombine))
                    recombine.append([(base, 1.0), (base + 1, 1.0), (base + 2, -1.0)])
                else:
                    v = values[a_i]
                    base = len(rows)
                    rows += [v, -v]
                    merged.append(len(recombine))
                    recombine.append([(base, 1.0), (base + 1, -1.0)])
            next_current.append(merged)
        weight = torch.stack(rows) if rows else torch.zeros((0, dim), dtype=torch.float64)
        pieces += [Affine(weight, torch.zeros(len(rows), dtype=torch.float64)), ReLU(len(rows))]
        combined = torch.zeros((len(recombine), len(rows)), dtype=torch.float64)
        for r, terms in enumerate(recombine):
            for col, coef in terms:
                combined[r, col] = coef
        dim = len(recombine)
        current = [[combined[m] for m in merged] for merged in next_current]
    final = torch.stack([values[0] for values in current])
    pieces.append(Affine(final, torch.zeros(len(final), dtype=torch.float64)))
    return pieces


def _unit(index: int, size: int) -> Tensor:
    v = torch.zeros(size, dtype=torch.float64)
    v[index] = 1.0
    return v


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _leaf_calls(model: nn.Module, x: Tensor) -> tuple[list[tuple[str, nn.Module, Tensor, Tensor]], Tensor]:
    """(name, module, input, output) of every leaf module in the order one forward pass calls them."""
    calls: list[tuple[str, nn.Module, Tensor, Tensor]] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: Any) -> None:
            inp = args[0] if args else None
            if isinstance(inp, Tensor) and isinstance(output, Tensor):
                calls.append((name, module, inp.detach(), output.detach()))
            else:
                calls.append((name, module, torch.empty(0), torch.empty(0)))

        return record

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook(n or "<model>")) for n, m in leaves]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, out


def walk(model: nn.Module, x: Tensor, num_classes: int, max_relus: int = MAX_NEURONS) -> Network:
    """The model as affine maps and ReLUs (see the module docstring); NotVerifiable with the reason otherwise. A
    network of more than `max_relus` ReLUs is refused, estimated from one forward pass before any matrix is built."""
    from robustprune.models.layers import Normalize

    if isinstance(model, torch.jit.ScriptModule):
        raise NotVerifiable("a TorchScript module: its layers cannot be read")
    calls, out = _leaf_calls(model, x[:2])
    if not calls:
        raise NotVerifiable("no layer of the model ran in its forward pass")
    estimate = _relu_estimate(calls)
    if estimate > max_relus:
        raise NotVerifiable(f"about {estimate:,} ReLUs are beyond the size guard ({max_relus:,})")
    seen = set()
    pieces: list[Affine | ReLU] = []
    previous = x[:2].detach()
    for name, module, inp, output in calls:
        if id(module) in seen:
            raise NotVerifiable(f"layer {name} runs twice in one forward pass (a shared or recurrent layer)")
        seen.add(id(module))
        if inp.numel() == 0:
            raise NotVerifiable(f"layer {name} does not take and return one tensor")
        same_size = inp.shape[0] == previous.shape[0] and inp.numel() == previous.numel()
        if same_size and not torch.equal(inp.reshape(-1), previous.reshape(-1)):
            if torch.equal(inp.reshape(-1), previous.reshape(-1).clamp_min(0)):
                pieces.append(ReLU(inp[0].numel()))  # a functional relu (F.relu, torch.relu) between two modules
            else:
                same_size = False
        if not same_size:
            raise NotVerifiable(
                f"layer {name} does not run on what the layer before it returned: the forward pass branches, adds "
                "a residual or computes between modules"
            )
        shape = tuple(inp.shape[1:])
        if isinstance(module, nn.ReLU):
            pieces.append(ReLU(math.prod(shape)))
        elif isinstance(module, nn.MaxPool2d) and len(shape) == 3:
            pieces += _maxpool_pieces(module, shape)
        elif isinstance(module, (*_AFFINE, Normalize)):
            pieces.append(_linear_map(module, shape))
        else:
            raise NotVerifiable(
                f"layer {name} is a {type(module).__name__}: verification supports Linear, Conv, BatchNorm (eval), "
                "pooling, Flatten, Identity, Dropout (eval), Normalize and ReLU"
            )
        previous = output
    final = out.detach().reshape(-1)
    relu_after = previous.numel() == out.numel() and not torch.equal(previous.reshape(-1), final)
    if relu_after and torch.equal(previous.reshape(-1).clamp_min(0), final):  # a functional relu on the logits
        pieces.append(ReLU(out[0].numel()))
        previous = out.detach()
    if previous.numel() != out.numel() or not torch.equal(previous.reshape(-1), final):
        raise NotVerifiable("the model's logits are not its last layer's output (it computes after its modules)")
    network = Network(_merged(pieces), tuple(x.shape[1:]), num_classes)
    if network.n_relus > max_relus:
        raise NotVerifiable(f"{network.n_relus:,} ReLUs are beyond the size guard ({max_relus:,})")
    return network


def _relu_estimate(calls: list[tuple[str, nn.Module, Tensor, Tensor]]) -> int:
    """ReLUs the walk will create, from one forward pass: each ReLU's outputs, and a MaxPool's tree (three per
    merge of two, k - 1 merges per window of k)."""
    total = 0
    for _, module, _, output in calls:
        per_example = output[0].numel() if output.numel() else 0
        if isinstance(module, nn.ReLU):
            total += per_example
        elif isinstance(module, nn.MaxPool2d):
            k = _pair(module.kernel_size)
            total += 3 * (k[0] * k[1] - 1) * per_example
    return total


def _merged(pieces: list[Affine | ReLU]) -> list[Affine | ReLU]:
    """Consecutive affine pieces multiplied into one (while the product stays within the size guard)."""
    out: list[Affine | ReLU] = []
    for piece in pieces:
        if isinstance(piece, Affine) and out and isinstance(out[-1], Affine):
            last = out[-1]
            if piece.weight.shape[0] * last.weight.shape[1] <= MAX_MATRIX_ENTRIES:
                out[-1] = Affine(piece.weight @ last.weight, piece.weight @ last.bias + piece.bias)
                continue
        out.append(piece)
    if not out or isinstance(out[0], ReLU):
        out.insert(
            0, Affine(torch.eye(_width(out), dtype=torch.float64), torch.zeros(_width(out), dtype=torch.float64))
        )
    if isinstance(out[-1], ReLU):
        size = out[-1].size
        out.append(Affine(torch.eye(size, dtype=torch.float64), torch.zeros(size, dtype=torch.float64)))
    return out


def _width(pieces: list[Affine | ReLU]) -> int:
    first = pieces[0]
    return first.size if isinstance(first, ReLU) else first.weight.shape[1]
