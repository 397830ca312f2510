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
    """The input region: a center, the norm and eps, and the [0, 1] box."""

    x: Tensor  # flattened, float64
    norm: str
    eps: float

    @property
    def lower(self) -> Tensor:
        return (self.x - self.eps).clamp(0, 1) if self.norm == "Linf" else torch.zeros_like(self.x)

    @property
    def upper(self) -> Tensor:
        return (self.x + self.eps).clamp(0, 1) if self.norm == "Linf" else torch.ones_like(self.x)

    def minimum(self, a: Tensor, c: Tensor) -> Tensor:
        """min over the region of a @ x + c, per row of a (closed form; for L2 the larger of two sound bounds)."""
        box = c + a.clamp_min(0) @ self.lower + a.clamp_max(0) @ self.upper
        if self.norm == "Linf":
            return box
        ball = c + a @ self.x - self.eps * a.norm(dim=1)
        return torch.maximum(box, ball)


@dataclass
class Bounds:
    """Pre-activation bounds of every ReLU layer (in order), and the margins' lower bounds."""

    pre: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    margins: Tensor | None = None  # (num_classes - 1,) lower bounds of z_y - z_t, t != y

    @property
    def n_unstable(self) -> int:
        return sum(int(((lo < 0) & (hi > 0)).sum()) for lo, hi in self.pre)


def margin_matrix(num_classes: int, label: int) -> Tensor:
    """Rows e_y - e_t for every t != y."""
    rows = torch.zeros((num_classes - 1, num_classes), dtype=torch.float64)
    targets = [t for t in range(num_classes) if t != label]
    rows[torch.arange(len(targets)), label] = 1.0
    rows[torch.arange(len(targets)), targets] = -1.0
    return rows


def _layers(network: Network) -> list[tuple[Affine, bool]]:
    """(affine, followed by a ReLU) pairs: the network as alternating layers."""
    out: list[tuple[Affine, bool]] = []
    for i, piece in enumerate(network.pieces):
        if isinstance(piece, Affine):
            follows = i + 1 < len(network.pieces) and isinstance(network.pieces[i + 1], ReLU)
            out.append((piece, follows))
    return out


def ibp(network: Network, region: Region, spec: Tensor) -> Bounds:
    """Interval bounds of every pre-activation and of spec @ logits."""
    lo, hi = region.lower, region.upper
    bounds = Bounds()
    layers = _layers(network)
    for k, (affine, relu) in enumerate(layers):
        weight, bias = affine.weight, affine.bias
        if k == len(layers) - 1:
            weight, bias = spec @ weight, spec @ bias
        center, radius = (hi + lo) / 2, (hi - lo) / 2
        mid = weight @ center + bias
        spread = weight.abs() @ radius
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


def _backward(layers: list[tuple[Affine, bool]], k: int, spec: Tensor, relax: list, region: Region) -> Tensor:
    """Lower bounds of spec @ (pre-activation of layer k), by back-substitution through layers k, k-1, ..., 0."""
    a = spec @ layers[k][0].weight
    c = spec @ layers[k][0].bias
    for j in range(k - 1, -1, -1):
        lower, upper, intercept = relax[j]
        positive, negative = a.clamp_min(0), a.clamp_max(0)
        c = c + negative @ intercept
        a = positive * lower + negative * upper
        c = c + a @ layers[j][0].bias
        a = a @ layers[j][0].weight
    return region.minimum(a, c)


def crown(network: Network, region: Region, spec: Tensor, reference: Bounds | None = None) -> Bounds:
    """CROWN bounds of every pre-activation and of spec @ logits (each pre-activation bound intersected with
    `reference`'s, IBP's, both being sound)."""
    layers = _layers(network)
    bounds = Bounds()
    relax = []
    for k, (affine, relu) in enumerate(layers[:-1]):
        if not relu:
            raise ValueError("consecutive affine layers are merged by the walk")  # not reachable from walk()
        eye = torch.eye(affine.weight.shape[0], dtype=torch.float64)
        lo = _backward(layers, k, eye, relax, region)
        hi = -_backward(layers, k, -eye, relax, region)
        if reference is not None:  # layer k is the k-th ReLU layer: the walk alternates affine maps and ReLUs
            ref_lo, ref_hi = reference.pre[k]
            lo, hi = torch.maximum(lo, ref_lo), torch.minimum(hi, ref_hi)
        bounds.pre.append((lo, hi))
        relax.append(_relaxation(lo, hi))
    bounds.margins = _backward(layers, len(layers) - 1, spec, relax, region)
    return bounds


def margin_bounds(network: Network, x: Tensor, label: int, norm: str, eps: float) -> tuple[Bounds, Bounds]:
    """(IBP, CROWN) bounds for one example: x of the model's input shape, its label."""
    region = Region(x.reshape(-1).double(), norm, float(eps))
    spec = margin_matrix(network.num_classes, label)
    interval = ibp(network, region, spec)
    linear = crown(network, region, spec, reference=interval)
    return interval, linear


def certified(bounds: Bounds) -> bool:
    return bounds.margins is not None and bool((bounds.margins > CERTIFY_TOLERANCE).all())


def memory_estimate(network: Network) -> int:
    """Bytes CROWN's back-substitution holds at its widest (float64): the identity spec of the widest layer times
    the widest input it is substituted to."""
    widths = [p.weight.shape[0] for p in network.pieces if isinstance(p, Affine)]
    inputs = [p.weight.shape[1] for p in network.pieces if isinstance(p, Affine)]
    return 8 * max(widths) * max(inputs) * 3 if widths else 0


__all__ = ["CERTIFY_TOLERANCE", "Bounds", "Region", "certified", "crown", "ibp", "margin_bounds", "memory_estimate"]
