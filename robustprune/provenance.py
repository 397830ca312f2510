"""Provenance recorded with every result: versions, seed, threads, command line, platform."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

import robustprune

PACKAGES = ("torch", "torchattacks", "pyautoattack", "numpy", "scikit-learn", "safetensors")


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def collect(*, seed: int, command: list[str] | None, device: str) -> dict[str, Any]:
    return {
        "robustprune": robustprune.__version__,
        "versions": {name: package_version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seed": seed,
        "threads": torch.get_num_threads(),
        "device": device,
        "command": command,  # the CLI's argv; None when called through the Python API
        "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }
