"""The Python API's arguments, checked like the command line's: a wrong type or value is one UsageError line
saying what was expected, never a TypeError or AttributeError from deep inside a stage."""

from __future__ import annotations

import math
import os
from typing import Any

from torch import nn

from robustprune.config import BatterySpec
from robustprune.errors import UsageError


def _kind(value: Any) -> str:
    return type(value).__name__


def check_api_arguments(
    model: Any,
    data: Any,
    battery: Any,
    *,
    architecture: Any = None,
    command: Any = None,
    norm: Any = None,
    eps: Any = None,
    n: Any = None,
    checkpoint: Any = None,
    parent: Any = None,
    reference_acc: Any = None,
    escalation_budget: Any = None,
    head_battery: Any = None,
    efficiency: Any = True,
    progress: Any = False,
    eps_grid: Any = None,
    **_: Any,
) -> None:
    """Every score() argument of the right kind (values are checked where they are used, with the CLI's bounds)."""
    from robustprune.data import Dataset
    from robustprune.scoring.escalation import EscalationBudget

    for what, module in (("model", model), ("parent", parent)):
        if module is not None and not isinstance(module, nn.Module):
            raise UsageError(
                f"score() needs the {what} as a torch.nn.Module, got {_kind(module)}: build one with "
                "robustprune.models.build_model(name, num_classes, input_shape)"
            )
    if model is None:
        raise UsageError("score() needs a model (a torch.nn.Module), got None")
    if not isinstance(data, Dataset | str | os.PathLike | tuple):
        raise UsageError(f"score() needs data as a Dataset, 'digits', a path or an (x, y) pair, got {_kind(data)}")
    if isinstance(data, tuple) and len(data) != 2:
        raise UsageError(f"score() data as a tuple must be (x, y), got {len(data)} items")
    for what, spec in (("battery", battery), ("head_battery", head_battery)):
        if spec is None and what == "head_battery":
            continue
        if not isinstance(spec, BatterySpec | str | os.PathLike):
            raise UsageError(f"score() {what} must be a battery name, a TOML path or a BatterySpec, got {_kind(spec)}")
    if norm is not None and norm not in ("Linf", "L2"):
        raise UsageError(f"score() norm must be 'Linf' or 'L2', got {norm!r}")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps)):
        raise UsageError(f"score() eps must be a finite number in pixel units of [0, 1] inputs, got {eps!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
        raise UsageError(f"score() n must be a whole number or None, got {n!r}")
    if checkpoint is not None and not isinstance(checkpoint, dict):
        raise UsageError(
            f"score() checkpoint must be the CheckpointInfo load_checkpoint returned (or its .to_dict()), got "
            f"{_kind(checkpoint)}: load the file with robustprune.models.load_checkpoint(model, path)"
        )
    if reference_acc is not None and (
        isinstance(reference_acc, bool) or not isinstance(reference_acc, int | float) or not 0 <= reference_acc <= 1
    ):
        raise UsageError(
            f"score() reference_acc must be a clean accuracy as a fraction in [0, 1], got {reference_acc!r}"
        )
    if escalation_budget is not None and not isinstance(escalation_budget, EscalationBudget):
        raise UsageError(f"score() escalation_budget must be an EscalationBudget, got {_kind(escalation_budget)}")
    for what, flag in (("efficiency", efficiency), ("progress", progress)):
        if not isinstance(flag, bool):
            raise UsageError(f"score() {what} must be True or False, got {flag!r}")
    if architecture is not None and not isinstance(architecture, str):
        raise UsageError(f"score() architecture must be a name (str), got {_kind(architecture)}")
    if command is not None and not (isinstance(command, list) and all(isinstance(c, str) for c in command)):
        raise UsageError("score() command must be a list of strings (the command line to record), or None")
    if eps_grid is not None and not isinstance(eps_grid, list | tuple):
        raise UsageError(f"score() eps_grid must be a list of eps values, got {_kind(eps_grid)}")
