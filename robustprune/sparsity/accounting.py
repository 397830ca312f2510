"""Sparsity accounting on effective weights: per layer, over Conv/Linear weights (the headline), over every
parameter, compression ratio, and MACs dense vs effective (DESIGN.md "Sparsity accounting")."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustprune.errors import UsageError
from robustprune.sparsity.masks import _is_masked, _prunable_by_name, effective_weight, measuring, model_device_dtype


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
    device, dtype = model_device_dtype(model)
    try:
        with measuring(model):
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
