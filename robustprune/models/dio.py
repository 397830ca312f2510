"""DIO (DIversity via Orthogonality; Fang et al., arXiv 2010.12190): one shared backbone, L bias-free linear heads.

The backbone is any registered architecture with its final nn.Linear replaced by nn.Identity, so its output is the
penultimate feature h(x) in R^d. Head l computes z_l = W_l h(x) with W_l in R^{C x d} (bias-free, as in the official
code). The heads are ordinary nn.Linear modules in an nn.ModuleList, so sparsity accounting and pruning see them.

Inference modes (`set_mode`):
- "random": one head drawn uniformly per forward pass, for the whole batch (the published inference; a randomized
  defense, drawn from torch's global RNG so `torch.manual_seed` makes a run repeatable);
- "fixed": always head `head`;
- "mean": the mean of all heads' logits (a deterministic ensemble).

Registered as `dio_<base>` for the built-in bases, with the standard factory signature plus `heads` and `mode`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

from robustprune.errors import UsageError
from robustprune.models.modes import eval_mode
from robustprune.models.registry import MODELS, Factory, resolve_factory

Mode = Literal["random", "fixed", "mean"]
MODES: tuple[str, ...] = ("random", "fixed", "mean")
DIO_BASES: tuple[str, ...] = ("mlp", "digits_cnn", "vgg11", "preact_resnet18")


class DIOModel(nn.Module):
    """Shared backbone + `heads` parallel bias-free linear heads; see the module docstring for the modes."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        heads: int = 10,
        mode: Mode = "random",
        head: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise UsageError(f"DIO needs heads >= 1, got {heads!r}")
        self.backbone = backbone
        self.heads = nn.ModuleList(nn.Linear(feature_dim, num_classes, bias=False) for _ in range(heads))
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.mode: Mode = "random"
        self.head: int | None = None
        self.last_head: int | None = None  # the head the latest forward pass used (None in mean mode)
        self.set_mode(mode, head)

    @property
    def n_heads(self) -> int:
        return len(self.heads)

    def set_mode(self, mode: Mode, head: int | None = None) -> None:
        if mode not in MODES:
            raise UsageError(f"DIO mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "fixed":
            if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < self.n_heads:
                raise UsageError(f"DIO fixed mode needs a head index in [0, {self.n_heads}), got {head!r}")
        elif head is not None:
            raise UsageError(f"DIO mode {mode!r} takes no head index (got {head!r}); use mode='fixed'")
        self.mode, self.head = mode, head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def head_logits(self, x: torch.Tensor, head: int) -> torch.Tensor:
        return self.heads[head](self.backbone(x))

    def all_head_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every head, shape (L, N, C); the backbone runs once."""
        h = self.backbone(x)
        return torch.stack([head(h) for head in self.heads])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            self.last_head = None
            return self.all_head_logits(x).mean(dim=0)
        if self.mode == "fixed":
            index = int(self.head)  # type: ignore[arg-type]
        else:  # drawn on the CPU so the draw sequence is the same on every device
            index = int(torch.randint(self.n_heads, (1,)))
        self.last_head = index
        return self.head_logits(x, index)

    def extra_repr(self) -> str:
        return f"heads={self.n_heads}, feature_dim={self.feature_dim}, mode={self.mode!r}, head={self.head}"


@contextlib.contextmanager
def head_mode(model: nn.Module, mode: Mode, head: int | None = None) -> Iterator[nn.Module]:
    """Temporarily switch a multi-head model (duck-typed: `set_mode`, `mode`, `head`) to `mode`; restored after."""
    saved = (getattr(model, "mode", "random"), getattr(model, "head", None))
    model.set_mode(mode, head)
    try:
        yield model
    finally:
        model.set_mode(*saved)


def strip_classifier(model: nn.Module, num_classes: int) -> tuple[nn.Module, int]:
    """Replace the model's last nn.Linear (which must output `num_classes`) by nn.Identity; return (model, d)."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UsageError(f"{type(model).__name__} has no nn.Linear classifier for DIO to replace by heads")
    name, last = linears[-1]
    if last.out_features != num_classes:
        raise UsageError(
            f"the last nn.Linear of {type(model).__name__} ({name}) outputs {last.out_features} values, "
            f"not the {num_classes} classes; DIO needs the classifier to be the last linear layer"
        )
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, nn.Identity())
    return model, last.in_features


def dio_model(
    base: str | Factory,
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    heads: int = 10,
    mode: Mode = "random",
) -> DIOModel:
    """A DIO model on the registered architecture (or factory) `base`."""
    factory = resolve_factory(base) if isinstance(base, str) else base
    backbone, d = strip_classifier(factory(num_classes, input_shape, mean=mean, std=std), num_classes)
    with eval_mode(backbone, no_grad=True):  # the feature must be flat (N, d) for linear heads
        out = backbone(torch.zeros(1, *input_shape))
    if tuple(out.shape) != (1, d):
        raise UsageError(f"{base}: the backbone outputs shape {tuple(out.shape)[1:]}, not the flat feature ({d},)")
    return DIOModel(backbone, d, num_classes, heads=heads, mode=mode).eval()


def _register(base: str) -> None:
    def factory(
        num_classes: int,
        input_shape: tuple[int, int, int],
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        heads: int = 10,
        mode: Mode = "random",
    ) -> DIOModel:
        return dio_model(base, num_classes, input_shape, mean=mean, std=std, heads=heads, mode=mode)

    factory.__name__ = f"dio_{base}"
    factory.__doc__ = f"DIO on {base}: its classifier replaced by `heads` bias-free linear heads (default 10)."
    MODELS.add(f"dio_{base}", factory)


for _base in DIO_BASES:
    _register(_base)
