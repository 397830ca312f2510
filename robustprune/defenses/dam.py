"""`dam`: DiscriminAtive Masking (Bu, Daw, Maruf, Karpatne; NeurIPS'21, arXiv 2110.00684; algorithms.md §4.5 and
§6), single-stage structured pruning: a fixed, ordered gate profile per layer shifted by one learned scalar.

For a gated layer with n channels (or neurons), g_i = ReLU(tanh(alpha^2 (mu_i + beta))), mu_i = 5 i / n fixed,
beta trainable (init 1.0), alpha = 1; the loss is CE + lambda * mean over layers of clamp(beta, min=-5). As beta
falls, channels close one at a time in index order (channel i is closed exactly when mu_i + beta <= 0); beta is
frozen during a cold start, as in `jayroxis/dam-pytorch`.

Where the gates sit: on the output of every `nn.ReLU` module fed by a Conv/Linear layer (through an optional
BatchNorm), found by tracing one forward pass; ReLUs fed by anything else (a residual sum) are not gated. The
reference gates before the next BatchNorm; gating after the activation makes a closed channel exactly zero, so
converting it needs no folding of BatchNorm's shift through a zero-padded convolution (which is not exact at the
borders). Conversion at the end: each open gate's value (> 0) is folded into the producing layer (or its
BatchNorm's affine parameters), since ReLU(z) * g = ReLU(g z) for g > 0; each closed channel is zeroed with masks
over its whole group (producer row and bias, BatchNorm, consumers' input columns), so the converted model has the
plain architecture, computes what the gated one computed, and `compact` removes the closed channels exactly.

Sparsity control: the target (the `sparsity` of `train`) is the share of each gated layer's channels to close.
lambda sets sparsity only indirectly in the reference; here a layer whose gate reaches round(s * n) closed
channels has its beta set between mu_{k-1} and mu_k and frozen; until then no layer may run ahead of a linear pace
that reaches the targets half-way through the steps after the cold start (beta is held at the pace), lambda doubles
after any epoch in which the open layers lag that pace, and a layer that lags a second pace (targets at 70 %) is
closed to it by setting beta (counted per layer in the log as `dam_closed_by_floor`), so the final architecture
always trains for the last 30 % of the run (on digits, 0.9: 84 % clean with these paces, 41 % with 75 / 90 %). A layer still short at the end (a run too short for the floor) is
closed to its target without training, and the manifest says so (event `closed_without_training`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustprune.data import Dataset
from robustprune.defenses.base import Artifact, Defense, register_defense
from robustprune.defenses.pruning_driver import final_metrics
from robustprune.defenses.train_loop import Callback, StepContext, fit
from robustprune.errors import UsageError
from robustprune.sparsity import check_sparsity, measuring
from robustprune.sparsity.masks import model_device_dtype

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
BETA_MIN = -5.0
CONVERSION_TOLERANCE = 1e-5  # converted vs gated outputs, relative to the largest logit
REACH = 0.5  # the control's cap: targets reached no sooner than half-way through the steps after the cold start
FLOOR_REACH = 0.7  # and its floor: reached no later than 70 % of them, so the last 30 % train the final network


@dataclass(frozen=True)
class GateSite:
    """A gateable activation: the ReLU module, the Conv/Linear layer producing its channels, the BatchNorm between."""

    relu: str
    producer: str
    norm: str | None
    channels: int


def gate_sites(model: nn.Module, input_shape: tuple[int, ...]) -> list[GateSite]:
    """Trace one forward pass: every `nn.ReLU` called once whose input is a Conv/Linear output, directly or through
    an affine BatchNorm. Layers whose outputs are the model's output are never producers (they feed no ReLU)."""
    names = {m: n for n, m in model.named_modules()}
    made: dict[int, tuple[str, str | None]] = {}  # id(tensor) -> (producer, norm)
    keep: list[Tensor] = []  # holds traced tensors so their ids are not reused during the trace
    calls: dict[str, int] = {}
    sites: dict[str, GateSite] = {}

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        name = names[module]
        if not isinstance(output, Tensor) or not args or not isinstance(args[0], Tensor):
            return
        keep.extend([args[0], output])
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            made[id(output)] = (name, None)
        elif isinstance(module, _NORMS) and module.affine and id(args[0]) in made and made[id(args[0])][1] is None:
            made[id(output)] = (made[id(args[0])][0], name)
        elif isinstance(module, nn.ReLU):
            calls[name] = calls.get(name, 0) + 1
            source = made.get(id(args[0]))
            if source is not None and output.ndim >= 2:
                sites[name] = GateSite(name, source[0], source[1], int(output.shape[1]))

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    device, dtype = model_device_dtype(model)
    try:
        with measuring(model):
            model(torch.zeros((2, *input_shape), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return [site for name, site in sites.items() if calls[name] == 1]


def exact_sites(model: nn.Module, sites: list[GateSite], input_shape: tuple[int, ...]) -> list[GateSite]:
    """The sites whose conversion is exact: each is tried alone on a copy (half its channels closed, the rest
    folded), and kept when the converted copy computes what the gated one did. A channel that also feeds a
    residual sum, or any path the trace cannot see, fails here instead of silently changing the model."""
    from robustprune.sparsity.structured import folded_copy, zero_channels

    device, dtype = model_device_dtype(model)
    x = torch.rand((4, *input_shape), generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    kept = []
    for site in sites:
        trial = folded_copy(model)
        gated = GatedModel(trial, [site], alpha=1.0)
        gate = gated.gates[site.producer]
        with torch.no_grad():
            gate.beta.fill_(gate.beta_closing(site.channels // 2))
        with measuring(trial):
            before = trial(x)
        closed = gated.convert()
        try:
            zero_channels(trial, input_shape, {k: v for k, v in closed.items() if v})
        except UsageError:
            continue
        with measuring(trial):
            after = trial(x)
        if float((after - before).abs().max()) <= CONVERSION_TOLERANCE * max(1.0, float(before.abs().max())):
            kept.append(site)
    return kept


class DamGate(nn.Module):
    """g_i = ReLU(tanh(alpha^2 (mu_i + beta))), mu_i = 5 i / n: channels close in index order as beta falls."""

    def __init__(self, channels: int, alpha: float = 1.0, beta: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("mu", 5.0 * torch.arange(channels, dtype=torch.float32) / channels)
        self.alpha = alpha
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def gate(self) -> Tensor:
        return torch.relu(torch.tanh(self.alpha**2 * (self.mu + self.beta)))

    def closed(self) -> int:
        return int((self.mu + self.beta.detach() <= 0).sum())

    def beta_closing(self, k: int) -> float:
        """A beta that closes exactly the first k channels (midway between mu_{k-1} and mu_k)."""
        n = self.mu.numel()
        if k <= 0:
            return max(float(self.beta.detach()), 2.5 / n)
        upper = -float(self.mu[k - 1])
        lower = -float(self.mu[k]) if k < n else upper - 1.0
        return (upper + lower) / 2

    def apply_to(self, output: Tensor) -> Tensor:
        g = self.gate().to(output.dtype)
        return output * g.view(1, -1, *([1] * (output.ndim - 2)))


class GatedModel:
    """Gates attached by forward hooks on the sites' ReLUs. Each gate is registered as a child of its ReLU module
    (a leaf whose forward ignores children), so `model.parameters()` hands the betas to the optimiser without
    changing how the model runs, until `convert` folds the gates away and restores the plain architecture."""

    def __init__(self, model: nn.Module, sites: list[GateSite], alpha: float) -> None:
        if not sites:
            raise UsageError(
                "DAM found no gateable layer: it gates nn.ReLU modules fed by a Conv/Linear layer (optionally through "
                "an affine BatchNorm); use an architecture built that way (digits_cnn, mlp, vgg11, preact_resnet18)"
            )
        self.model, self.sites = model, sites
        modules = dict(model.named_modules())
        self.relus = {s.producer: modules[s.relu] for s in sites}
        for site in sites:
            self.relus[site.producer].dam_gate = DamGate(site.channels, alpha)
        self._handles = [relu.register_forward_hook(_apply_gate) for relu in self.relus.values()]

    @property
    def gates(self) -> dict[str, DamGate]:
        return {producer: relu.dam_gate for producer, relu in self.relus.items()}

    def betas(self) -> list[nn.Parameter]:
        return [g.beta for g in self.gates.values()]

    def regulariser(self) -> Tensor:
        return torch.stack([b.clamp(min=BETA_MIN) for b in self.betas()]).mean()

    def convert(self) -> dict[str, list[int]]:
        """Fold open gates into their producers, remove the gates, return the closed channels per producer."""
        modules = dict(self.model.named_modules())
        closed: dict[str, list[int]] = {}
        with torch.no_grad():
            for site in self.sites:
                g = self.relus[site.producer].dam_gate.gate().detach()
                if site.norm is not None:
                    norm = modules[site.norm]
                    norm.weight.mul_(g.to(norm.weight.dtype))
                    norm.bias.mul_(g.to(norm.bias.dtype))
                else:
                    layer = modules[site.producer]
                    _weight_of(layer).mul_(g.to(layer.weight.dtype).view(-1, *([1] * (layer.weight.ndim - 1))))
                    if layer.bias is not None:
                        layer.bias.mul_(g.to(layer.bias.dtype))
                closed[site.producer] = [int(i) for i in torch.nonzero(g == 0).flatten()]
        for handle in self._handles:
            handle.remove()
        for relu in self.relus.values():
            del relu.dam_gate
        return closed


def _apply_gate(module: nn.Module, args: Any, output: Tensor) -> Tensor:
    return module.dam_gate.apply_to(output)


def _weight_of(layer: nn.Module) -> Tensor:
    return layer.weight_orig if hasattr(layer, "weight_orig") else layer.weight


class GateControl(Callback):
    """Cold start (betas held), per-layer freezing at the target, and lambda doubling when the layers lag."""

    def __init__(self, gated: GatedModel, targets: dict[str, int], cold_epochs: int, lam: float, growth: float) -> None:
        self.gated, self.targets, self.cold_epochs = gated, targets, cold_epochs
        self.lam, self.growth = lam, growth
        self.frozen: dict[str, float] = {}
        self.forced: dict[str, int] = {}  # channels per layer closed by the floor rather than by beta's descent
        self.initial = {name: float(g.beta.detach()) for name, g in gated.gates.items()}
        self.epochs = 0

    def on_train_begin(self, ctx: StepContext) -> None:
        self.epochs = max(1, ctx.total_steps // max(ctx.steps_per_epoch, 1))
        self._hold(ctx, 0)

    def on_step_end(self, ctx: StepContext) -> None:
        self._hold(ctx, ctx.step + 1)

    def paced(self, name: str, step: int, ctx: StepContext, reach: float) -> int:
        """The target scaled by a linear pace over the post-cold steps that reaches it at `reach` of them."""
        cold = self.cold_epochs * ctx.steps_per_epoch
        span = max(reach * (ctx.total_steps - cold), 1)
        return math.ceil(self.targets[name] * min(1.0, max(step - cold, 0) / span))

    def _hold(self, ctx: StepContext, step: int) -> None:
        """Per step: hold betas during the cold start and once frozen; otherwise keep each layer between a floor
        and a cap. Cap (pace reaching the target at REACH): one high-learning-rate epoch (momentum amplifies the
        regulariser's constant pull) could otherwise close a layer's whole share before the weights adapt. Floor
        (pace reaching it at FLOOR_REACH): a layer whose beta lambda has not moved far enough is closed to the
        floor, so the last epochs always train the final architecture instead of closing channels untrained."""
        with torch.no_grad():
            for name, gate in self.gated.gates.items():
                if ctx.epoch < self.cold_epochs:
                    gate.beta.fill_(self.initial[name])
                elif name in self.frozen:
                    gate.beta.fill_(self.frozen[name])
                elif gate.closed() >= self.targets[name]:
                    self.frozen[name] = gate.beta_closing(self.targets[name])
                    gate.beta.fill_(self.frozen[name])
                elif gate.closed() > (cap := self.paced(name, step, ctx, REACH)):
                    gate.beta.fill_(gate.beta_closing(cap))
                elif gate.closed() < (floor := self.paced(name, step, ctx, FLOOR_REACH)):
                    self.forced[name] = self.forced.get(name, 0) + floor - gate.closed()
                    gate.beta.fill_(gate.beta_closing(floor))
                    if floor >= self.targets[name]:
                        self.frozen[name] = gate.beta_closing(floor)

    def on_epoch_end(self, ctx: StepContext) -> dict[str, Any]:
        gates = self.gated.gates
        entry = {
            "dam_lambda": self.lam,
            "dam_closed": {name: g.closed() for name, g in gates.items()},
            "dam_closed_by_floor": dict(self.forced),
        }
        if ctx.epoch + 1 > self.cold_epochs:
            open_layers = [n for n in gates if n not in self.frozen and self.targets[n] > 0]
            if open_layers:
                progress = sum(gates[n].closed() / self.targets[n] for n in open_layers) / len(open_layers)
                # aim to be closed by REACH of the post-cold epochs, leaving the rest to train with them closed
                pace = (ctx.epoch + 1 - self.cold_epochs) / max(REACH * (self.epochs - self.cold_epochs), 1)
                if progress < pace:
                    self.lam *= self.growth
        return entry


@register_defense("dam")
class DAM(Defense):
    # Digits defaults. Reference (PreResNet-164, CIFAR): lambda 0.1 over 200 epochs x 390 steps, cold start 20, alpha
    # 1, SGD lr 0.05, wd 1e-3; a 10-epoch digits run has ~200 steps, so beta needs a larger push to travel as far.
    # alpha 3 (reference 1) sharpens the gates: with alpha 1 the channels left open next to the closing edge pass
    # only tanh(mu_i + beta) < 0.4 of their signal, which a short run cannot compensate at high sparsity.
    defaults = {"lam": 1.0, "cold_epochs": 1, "alpha": 3.0, "lam_growth": 2.0}

    def validate(self) -> None:
        where = f"recipe {self.recipe.name!r} [settings]"
        if float(self.settings["lam"]) <= 0 or float(self.settings["alpha"]) <= 0:
            raise UsageError(f"{where} lam and alpha must be > 0")
        if int(self.settings["cold_epochs"]) < 0:
            raise UsageError(f"{where} cold_epochs must be >= 0, got {self.settings['cold_epochs']}")
        if float(self.settings["lam_growth"]) < 1:
            raise UsageError(f"{where} lam_growth must be >= 1 (1 = a fixed lambda), got {self.settings['lam_growth']}")
        if self.recipe.pruning is not None:
            raise UsageError(f"{where}: DAM closes channels with its gates; remove the [pruning] table")
        if int(self.settings["cold_epochs"]) >= self.recipe.train.epochs > 0:
            raise UsageError(
                f"{where} cold_epochs ({self.settings['cold_epochs']}) must be below train.epochs "
                f"({self.recipe.train.epochs}): the gates need epochs to close"
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
        from robustprune.sparsity.structured import channel_sparsity, zero_channels

        sparsity = check_sparsity(sparsity)
        if parent is not None:
            raise UsageError(f"recipe {self.recipe.name!r} (dam) trains from scratch in one stage: drop --parent")
        if hasattr(model, "all_head_logits"):  # a random head per forward pass: gates could not be checked
            raise UsageError("DAM does not support multi-head randomized models (DIO); use a single-head architecture")
        traced = gate_sites(model, train.input_shape)
        sites = exact_sites(model, traced, train.input_shape)
        gated = GatedModel(model, sites, float(self.settings["alpha"]))
        targets = {s.producer: round(sparsity * s.channels) for s in sites}
        full = [s for s in sites if targets[s.producer] >= s.channels]
        if full:
            worst = min(full, key=lambda s: s.channels)
            raise UsageError(
                f"a channel share of {sparsity} would close all {worst.channels} channels of {worst.producer}: use "
                f"at most {(worst.channels - 1) / worst.channels:.4f}"
            )
        control = GateControl(
            gated,
            targets,
            int(self.settings["cold_epochs"]),
            float(self.settings["lam"]),
            float(self.settings["lam_growth"]),
        )

        def dam_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
            return nn.functional.cross_entropy(model(x), y) + control.lam * gated.regulariser()

        log = fit(
            model, train, val, self.recipe.train, loss=dam_loss, callbacks=[control], seed=seed, progress=progress
        )
        events: list[dict[str, Any]] = []
        short = {n: (g.closed(), targets[n]) for n, g in gated.gates.items() if g.closed() != targets[n]}
        with torch.no_grad():
            for name in short:
                gated.gates[name].beta.fill_(gated.gates[name].beta_closing(targets[name]))
        if short:
            events.append({"event": "closed_without_training", "layers": {n: list(v) for n, v in short.items()}})
        x_check = val.x[:64]
        with measuring(model):
            gated_out = model(x_check)
        closed = gated.convert()
        zero_channels(model, train.input_shape, {n: c for n, c in closed.items() if c})
        with measuring(model):
            diff = float((model(x_check) - gated_out).abs().max())
        if diff > CONVERSION_TOLERANCE * max(1.0, float(gated_out.abs().max())):
            raise RuntimeError(f"DAM: the converted model differs from the gated one by {diff:.3g}; please report it")
        report = channel_sparsity(model, train.input_shape)
        gated_channels = sum(s.channels for s in sites)
        gated_closed = sum(len(closed.get(s.producer, [])) for s in sites)
        events.append(
            {
                "event": "gates_converted",
                "closed": {n: len(c) for n, c in closed.items()},
                "max_abs_diff": diff,
                "closed_by_floor": dict(control.forced),
                "not_gated": sorted({s.producer for s in traced} - {s.producer for s in sites}),
            }
        )
        model.eval()
        return Artifact(
            model=model,
            log=log,
            extra={
                "settings": dict(self.settings),
                "pruning": {"criterion": "dam_gates", "schedule": "dam (single stage)", "reinit": False},
                "pruning_events": events,
                "sparsity_unit": "channels",
                # the target's own scope (the gated layers) first; every prunable channel group beside it
                "channel_sparsity": {
                    "sparsity": gated_closed / gated_channels,
                    "scope": "gated layers",
                    "channels": gated_channels,
                    "closed": gated_closed,
                    "all_groups": report.to_dict(),
                },
                "gated_layers": [s.__dict__ for s in sites],
                "final": final_metrics(model, val, self.recipe),
            },
        )
