"""Provenance recorded with every result: versions, seed, threads, command line, platform."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import Any

import torch

from robustprune.devices import device_record
from robustprune.version import __version__, package_version

PACKAGES = ("torch", "torchattacks", "pyautoattack", "numpy", "scikit-learn", "safetensors")


def collect(*, seed: int, command: list[str] | None, device: str | torch.device) -> dict[str, Any]:
    """`device`: where the run ran (a resolved torch.device, or its name); `device_info` records its kind, name,
    index and reproducibility caveats (robustprune.devices.device_record)."""
    return {
        "robustprune": __version__,
        "versions": {name: package_version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seed": seed,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "device_info": device_record(device),
        "command": command,  # the CLI's argv; None when called through the Python API
        "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }
