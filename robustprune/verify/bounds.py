"""Certified lower bounds on the margins z_y - z_t over a threat model's ball, in float64: IBP and CROWN.

Both bound every pre-activation over the input region (the Linf ball intersected with the [0, 1] box is a box; for
L2 the ball is used, and the box bound too where it is tighter, both sound). IBP pushes intervals through each
layer. CROWN (Zhang et al., NeurIPS 2018) relaxes each unstable ReLU (l < 0 < u) linearly (above by the chord
u (z - l) / (u - l), below by z or 0, whichever is closer to the chord's area) and propagates linear bounds
backwards to the input, where they are minimised in closed form; every layer's pre-activation bounds come from
the same back-substitution (the tightest of CROWN's and IBP's per neuron, both being sound). The margins are the
specification: their matrix is folded into the last affine map, which is much tighter than bounding logits.

An example is `certified` when every margin's lower bound exceeds CERTIFY_TOLERANCE (a float64 computation of a
float32 model: a bound within this of zero proves nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from robustprune.verify.network import Affine, Network, ReLU

CERTIFY_TOLERANCE = 1e-5  # a margin's lower bound must exceed this to count (float32 models, float64 bounds)
IBP_SLACK = 1e-9  # IBP may beat CROWN on a bound by at most rounding (it never should by more)


@dataclass
class Region:
    """The input regions of a batch of examples: their centers (B, d), the norm and eps, and the [0, 1] box."""

    x: Tensor  # (B, d) flattened, float64
    norm: str
    eps: float

    @property
    def lower(self) -> Tensor:
        return (self.x - self.eps).clamp(0, 1) if self.norm == "Linf" else torch.zeros_like(self.x)

    @property
    def upper(self) -> Tensor:
        return (self.x + self.eps).clamp(0, 1) if self.norm == "Linf" else torch.ones_like(self.x)

    def minimum(self, a: Tensor, c: Tensor) -> Tensor:
        """min over each example's region of a @ x + c, per row of a (B, m, d) (closed form; for L2 the larger of two
        sound bounds)."""
        box = c + _apply(a.clamp_min(0), self.lower) + _apply(a.clamp_max(0), self.upper)
        if self.norm == "Linf":
            return box
        ball = c + _apply(a, self.x) - self.eps * a.norm(dim=2)
        return torch.maximum(box, ball)


def _apply(a: Tensor, v: Tensor) -> Tensor:
    """a (B, m, n) times v (B, n), per example: (B, m)."""
    return torch.bmm(a, v.unsqueeze(2)).squeeze(2)


@dataclass
class Bounds:
    """Pre-activation bounds of every ReLU layer (in order, each (B, n)), and the margins' lower bounds (B, K - 1)."""

    pre: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    margins: Tensor | None = None  # lower bounds of z_y - z_t, t != y

    @property
    def n_unstable(self) -> int:
        return sum(int(((lo < 0) & (hi > 0)).sum()) for lo, hi in self.pre)

    def example(self, i: int) -> Bounds:
        """The bounds of example i of the batch, as a batch of one."""
        pre = [(lo[i : i + 1], hi[i : i + 1]) for lo, hi in self.pre]
        return Bounds(pre, self.margins[i : i + 1] if self.margins is not None else None)


def margin_matrix(num_classes: int, label: int) -> Tensor:
    """Rows e_y - e_t for every t != y."""
    rows = torch.zeros((num_classes - 1, num_classes), dtype=torch.float64)
    targets = [t for t in range(num_classes) if t != label]
    rows[torch.arange(len(targets)), label] = 1.0
    rows[torch.arange(len(targets)), targets] = -1.0
    return rows


def margin_matrices(num_classes: int, labels: list[int]) -> Tensor:
    """margin_matrix of every example: (B, K - 1, K)."""
    return torch.stack([margin_matrix(num_classes, label) for label in labels])


def _layers(network: Network) -> list[tuple[Affine, bool]]:
    """(affine, followed by a ReLU) pairs: the network as alternating layers."""
    out: list[tuple[Affine, bool]] = []
    for i, piece in enumerate(network.pieces):
        if isinstance(piece, Affine):
            follows = i + 1 < len(network.pieces) and isinstance(network.pieces[i + 1], ReLU)
            out.append((piece, follows))
    return out


def ibp(network: Network, region: Region, spec: Tensor) -> Bounds:
    """Interval bounds of every pre-activation and of spec @ logits (spec: (B, m, K))."""
    lo, hi = region.lower, region.upper
    bounds = Bounds()
    layers = _layers(network)
    for k, (affine, relu) in enumerate(layers):
        center, radius = (hi + lo) / 2, (hi - lo) / 2
        if k == len(layers) - 1:
            weight = spec @ affine.weight  # (B, m, in)
            mid = _apply(weight, center) + spec @ affine.bias
            spread = _apply(weight.abs(), radius)
        else:
            mid = center @ affine.weight.T + affine.bias
            spread = radius @ affine.abs_weight.T
        lo, hi = mid - spread, mid + spread
        if relu:
            bounds.pre.append((lo, hi))
            lo, hi = lo.clamp_min(0), hi.clamp_min(0)
    bounds.margins = lo
    return bounds


def _relaxation(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(lower slope, upper slope, upper intercept) of each ReLU given its pre-activation bounds: a >= lower * z,
    a <= upper * z + intercept."""
    active, inactive = lo >= 0, hi <= 0
    unstable = ~active & ~inactive
    width = (hi - lo).clamp_min(1e-30)
    upper = torch.where(active, torch.ones_like(lo), torch.zeros_like(lo))
    intercept = torch.zeros_like(lo)
    upper = torch.where(unstable, hi / width, upper)
    intercept = torch.where(unstable, -hi * lo / width, intercept)
    lower = torch.where(active, torch.ones_like(lo), torch.zeros_like(lo))
    lower = torch.where(unstable & (hi > -lo), torch.ones_like(lo), lower)
    return lower, upper, intercept


def _backward(layers: list[tuple[Affine, bool]], k: int, spec: Tensor | float, relax: list, region: Region) -> Tensor:
    """Lower bounds of spec @ (pre-activation of layer k), by back-substitution through layers k, k-1, ..., 0.
    spec: (B, m, out_k), or a number s for s times the identity (every neuron of the layer, without the product)."""
    if isinstance(spec, Tensor):
        a = spec @ layers[k][0].weight
        c = spec @ layers[k][0].bias
    else:
        batch = region.x.shape[0]
        a = (spec * layers[k][0].weight).expand(batch, -1, -1)
        c = (spec * layers[k][0].bias).expand(batch, -1)
    for j in range(k - 1, -1, -1):
        lower, upper, intercept = relax[j]
        negative = a.clamp_max(0)  # a negative coefficient takes the upper relaxation, a positive one the lower
        c = c + _apply(negative, intercept)
        a = (a * lower.unsqueeze(1)).add_(negative.mul_((upper - lower).unsqueeze(1)))
        c = c + a @ layers[j][0].bias
        a = a @ layers[j][0].weight
    return region.minimum(a, c)


def crown(
    network: Network, region: Region, spec: Tensor, reference: Bounds | None = None, *, intermediate: bool = True
) -> Bounds:
    """CROWN bounds of every pre-activation and of spec @ logits (each pre-activation bound intersected with
    `reference`'s, IBP's, both being sound). `intermediate=False` takes the pre-activation bounds from `reference`
    as they are and back-substitutes the margins only (CROWN-IBP, Zhang et al., ICLR 2020): looser, but its cost is
    that of a few passes instead of one back-substitution per neuron."""
    layers = _layers(network)
    if not intermediate:
        if reference is None:
            raise ValueError("CROWN without intermediate bounds needs IBP's")
        relax = [_relaxation(lo, hi) for lo, hi in reference.pre]
        return Bounds(pre=list(reference.pre), margins=_backward(layers, len(layers) - 1, spec, relax, region))
    bounds = Bounds()
    relax = []
    for k, (_, relu) in enumerate(layers[:-1]):
        if not relu:
            raise ValueError("consecutive affine layers are merged by the walk")  # not reachable from walk()
        if k == 0 and region.norm == "Linf" and reference is not None:
            lo, hi = reference.pre[0]  # an affine map of a box: the interval bound is already exact
        else:
            lo = _backward(layers, k, 1.0, relax, region)
            hi = -_backward(layers, k, -1.0, relax, region)
        if reference is not None:  # layer k is the k-th ReLU layer: the walk alternates affine maps and ReLUs
            ref_lo, ref_hi = reference.pre[k]
            lo, hi = torch.maximum(lo, ref_lo), torch.minimum(hi, ref_hi)
        bounds.pre.append((lo, hi))
        relax.append(_relaxation(lo, hi))
    bounds.margins = _backward(layers, len(layers) - 1, spec, relax, region)
    return bounds


def batch_bounds(
    network: Network, x: Tensor, labels: list[int], norm: str, eps: float, *, intermediate: bool = True
) -> tuple[Bounds, Bounds]:
    """(IBP, CROWN) bounds for a batch of examples: x (B, *input shape), their labels."""
    region = Region(x.reshape(len(x), -1).double(), norm, float(eps))
    spec = margin_matrices(network.num_classes, labels)
    interval = ibp(network, region, spec)
    linear = crown(network, region, spec, reference=interval, intermediate=intermediate)
    return interval, linear


def margin_bounds(
    network: Network, x: Tensor, label: int, norm: str, eps: float, *, intermediate: bool = True
) -> tuple[Bounds, Bounds]:
    """(IBP, CROWN) bounds for one example (a batch of one): x of the model's input shape, its label."""
    return batch_bounds(network, x.reshape(1, *x.shape), [label], norm, eps, intermediate=intermediate)


def certified(bounds: Bounds) -> bool:
    """Whether every margin of a batch of one is certified (see certified_rows for a batch)."""
    return bool(certified_rows(bounds).all())


def certified_rows(bounds: Bounds) -> Tensor:
    """Per example of the batch: every margin's lower bound exceeds CERTIFY_TOLERANCE."""
    if bounds.margins is None:
        return torch.zeros(0, dtype=torch.bool)
    return (bounds.margins > CERTIFY_TOLERANCE).all(dim=1)


def chunk_size(network: Network, intermediate: bool) -> int:
    """Examples bounded at once: CROWN's back-substitution holds (examples x widest layer x widest input) float64
    numbers; keep that near 256 MB."""
    widths = [p.weight.shape[0] for p in network.pieces if isinstance(p, Affine)]
    inputs = [p.weight.shape[1] for p in network.pieces if isinstance(p, Affine)]
    rows = max(widths) if intermediate else network.num_classes
    per_example = 8 * 3 * rows * max(inputs)
    return max(1, min(512, (8 * 2**20) // max(per_example, 1)))


# Above this many ReLUs, CROWN's back-substitution per neuron costs a minute per example on a CPU (digits_cnn:
# 15,488 ReLUs, 61 s): the intermediate bounds then come from IBP (CROWN-IBP).
FULL_CROWN_MAX_RELUS = 4_096


def full_crown(network: Network) -> bool:
    return network.n_relus <= FULL_CROWN_MAX_RELUS


__all__ = [
    "CERTIFY_TOLERANCE",
    "FULL_CROWN_MAX_RELUS",
    "Bounds",
    "Region",
    "batch_bounds",
    "certified",
    "certified_rows",
    "chunk_size",
    "crown",
    "full_crown",
    "ibp",
    "margin_bounds",
    "margin_matrices",
]
