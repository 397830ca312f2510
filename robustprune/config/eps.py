"""eps as people write it: a decimal (0.031), an exponent (3.1e-2) or a fraction of 8-bit steps (8/255)."""

from __future__ import annotations

import argparse
import math
import re

import numpy as np

from robustprune.errors import UsageError
from robustprune.validation import escape

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_FRACTION = re.compile(rf"^\s*({_NUMBER})\s*/\s*({_NUMBER})\s*$")


def parse_eps(value: object, where: str = "eps") -> float:
    """A finite, non-negative eps from a number or a text such as "8/255", "0.031" or "3.1e-2"."""
    if isinstance(value, bool):
        raise UsageError(f"{where} must be a number or a fraction such as 8/255, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _FRACTION.match(value)
        if match:
            numerator, denominator = float(match.group(1)), float(match.group(2))
            if denominator == 0:
                raise UsageError(f"{where} {escape(value)!r} divides by zero")
            number = numerator / denominator
        else:
            try:
                number = float(value.strip())
            except ValueError:
                raise UsageError(
                    f"{where} {escape(value)!r} is not a number: write a decimal (0.031) or a fraction (8/255)"
                ) from None
    else:
        raise UsageError(f"{where} must be a number or a fraction such as 8/255, got {type(value).__name__}")
    if not math.isfinite(number):
        raise UsageError(f"{where} {escape(str(value))!r} must be a finite number")
    if number < 0:
        raise UsageError(f"{where} {escape(str(value))!r} is negative: use a value >= 0 in pixel units of [0,1] inputs")
    return number


def eps_argument(text: str) -> float:
    """argparse `type=` for --eps: the same rules, reported as argparse reports a bad value."""
    try:
        return parse_eps(text, "--eps")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# Threat models people compare against when they give no eps: RobustBench's for CIFAR-10/100 (Linf 8/255, L2 0.5),
# the usual MNIST ones (Linf 0.3, L2 2.0), and this project's for its embedded 8x8 digits (Linf 0.1, L2 0.5).
DATASET_EPS: dict[str, dict[str, float]] = {
    "cifar": {"Linf": 8 / 255, "L2": 0.5},
    "mnist": {"Linf": 0.3, "L2": 2.0},
    "digits": {"Linf": 0.1, "L2": 0.5},
}
MAX_EPS = {"Linf": 1.0, "L2": 1000.0}  # beyond these eps is in the wrong units (the box itself is [0, 1])
MAX_GRID_POINTS = 1000  # eps values in one curve (each is a point of a table and a figure)
DEFAULTS_HELP = "default per dataset: CIFAR Linf 8/255, L2 0.5; MNIST Linf 0.3, L2 2.0; digits Linf 0.1, L2 0.5"


def data_family(input_shape: tuple[int, ...]) -> str | None:
    """Which default applies, from the example shape: 3x32x32 is CIFAR, 1x28x28 MNIST, 1x8x8 digits."""
    return {(3, 32, 32): "cifar", (1, 28, 28): "mnist", (1, 8, 8): "digits"}.get(tuple(input_shape))


def default_eps(input_shape: tuple[int, ...], norm: str) -> float:
    """The default eps for data of this shape under `norm`; a UsageError naming --eps when there is none."""
    family = data_family(input_shape)
    if family is None:
        raise UsageError(
            f"no default eps for inputs of shape {tuple(input_shape)} (defaults exist for CIFAR 3x32x32, MNIST "
            "1x28x28 and digits 1x8x8): pass --eps"
        )
    return DATASET_EPS[family][norm]


def parse_eps_grid(text: str) -> list[float]:
    """`start:stop:points` (inclusive, evenly spaced) or a comma list `0,0.05,0.1`; raises UsageError (one line)."""
    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, points = float(parts[0]), float(parts[1]), int(parts[2])
            if not (math.isfinite(start) and math.isfinite(stop)):
                raise UsageError(f"--eps-grid {text!r}: every eps must be finite and >= 0")
            if points > MAX_GRID_POINTS:
                raise UsageError(f"--eps-grid {text!r}: at most {MAX_GRID_POINTS} points (a curve needs a few dozen)")
            if points < 1 or (points == 1 and start != stop) or stop < start:
                raise ValueError
            grid = [float(v) for v in np.linspace(start, stop, points)]
        else:
            grid = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(
            f"--eps-grid {text!r}: expected start:stop:points (e.g. 0:0.3:16, stop >= start, points >= 2) "
            "or a comma list of eps (e.g. 0,0.05,0.1)"
        ) from None
    if not grid or any(not math.isfinite(e) or e < 0 for e in grid):
        raise UsageError(f"--eps-grid {text!r}: every eps must be finite and >= 0")
    return check_eps_grid(grid)


def check_eps_grid(grid: list[float], norm: str | None = None) -> list[float]:
    """The grid as sorted distinct floats; raises UsageError unless it is a non-empty list of at most
    MAX_GRID_POINTS finite eps >= 0, each within the threat model's bound when `norm` is known."""
    if not isinstance(grid, list | tuple):
        raise UsageError(f"eps_grid needs a list of numbers, got {type(grid).__name__}")
    if len(grid) > MAX_GRID_POINTS:
        raise UsageError(f"eps_grid has {len(grid):,} points; at most {MAX_GRID_POINTS} (a curve needs a few dozen)")
    try:
        values = [float(e) for e in grid]
    except (TypeError, ValueError):
        raise UsageError(f"eps_grid needs a list of numbers, got {grid!r}") from None
    if not values or any(not math.isfinite(e) or e < 0 for e in values):
        raise UsageError(f"eps_grid needs a non-empty list of finite eps >= 0, got {values}")
    if norm is not None:
        over = [e for e in values if e > MAX_EPS.get(norm, math.inf)]
        if over:
            raise UsageError(
                f"eps_grid point {over[0]:g} is beyond the {norm} bound {MAX_EPS[norm]:g} on inputs in [0, 1]; eps is "
                "in pixel units (e.g. 8/255 = 0.0314 for Linf)"
            )
    return sorted(set(values))


def eps_grid_argument(text: str) -> list[float]:
    """argparse `type=` for --eps-grid: parse_eps_grid's rules, reported as argparse reports a bad value."""
    try:
        return parse_eps_grid(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_grid_fits(grid: list[float] | tuple[float, ...], norm: str, n_features: int) -> None:
    """Every eps of a curve inside the threat model's bound and, for L2, the input box's diameter."""
    check_eps_grid(list(grid), norm)
    top = max(grid)
    if norm == "L2" and top > math.sqrt(n_features):
        raise UsageError(
            f"eps_grid point {top:g} exceeds the L2 diameter of the input box ({math.sqrt(n_features):.3g} for "
            f"{n_features} features); eps is in pixel units of [0, 1] inputs"
        )
