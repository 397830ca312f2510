"""Where models and data run: `--device auto|cpu|cuda|cuda:N|mps`, resolved once, recorded in the provenance.

Determinism: on the CPU a score is bit-for-bit repeatable. On a GPU, `resolve_device` sets
torch.backends.cudnn.deterministic = True and cudnn.benchmark = False (the convolution kernels are then chosen
the same way on every run), but torch.use_deterministic_algorithms is NOT forced: some ops the attacks need (e.g.
index_add / scatter backward, adaptive pooling backward) have no deterministic CUDA kernel and would raise. Robust
outcomes on CUDA can therefore differ from the CPU's (and between runs) by floating-point rounding; clean
predictions normally agree. `device_record` writes these caveats into every result made on a GPU.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from robustprune.errors import UsageError

CHOICES = "auto, cpu, cuda, cuda:N or mps"
_SPEC = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")

CUDA_CAVEATS = (
    (
        "CUDA kernels may be non-deterministic: robust outcomes can differ from the CPU's and between runs by "
        "floating-point rounding"
    ),
    "torch.backends.cudnn.deterministic=True and torch.backends.cudnn.benchmark=False are set",
    "torch.use_deterministic_algorithms is not forced: some attacks' ops have no deterministic CUDA kernel",
)
MPS_CAVEATS = ("MPS kernels may be non-deterministic and differ from the CPU's by floating-point rounding",)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _set_deterministic_flags() -> None:
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def check_device_spec(spec: object, what: str = "--device") -> str:
    """`spec` as a device name, its form checked but not whether this machine has it (a sweep's device is resolved
    where each cell runs)."""
    text = spec.strip().lower() if isinstance(spec, str) else None
    match = _SPEC.match(text) if text is not None else None
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UsageError(f"{what} {spec!s}: unknown device; use one of {CHOICES}")
    return text  # type: ignore[return-value]


def is_cuda_spec(spec: str | None) -> bool:
    """Whether a (checked) device name asks for CUDA: cuda, cuda:N, or auto on a machine with a CUDA device."""
    text = (spec or "auto").strip().lower()
    return text.startswith("cuda") or (text == "auto" and torch.cuda.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch.device `spec` names, checked to exist here; "auto" (or None) picks cuda, then mps, then cpu.

    Raises UsageError (one line) for a malformed name or a device this machine does not have. On CUDA the cuDNN
    determinism flags are set (see the module docstring)."""
    if spec is None:
        spec = "auto"
    if isinstance(spec, torch.device):
        text = str(spec)
    elif isinstance(spec, str):
        text = spec.strip().lower()
    else:
        raise UsageError(f"--device needs one of {CHOICES}, got {type(spec).__name__}")
    match = _SPEC.match(check_device_spec(text))
    assert match is not None
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            kind = "cuda"
        elif _mps_available():
            kind = "mps"
        else:
            kind = "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise UsageError(f"--device {text}: no MPS (Apple GPU) device is available here; use --device cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {text}: no CUDA device is available here; use --device cpu")
    count = torch.cuda.device_count()
    i = int(index) if index is not None else torch.cuda.current_device()
    if i >= count:
        raise UsageError(
            f"--device {text}: this machine has {count} CUDA device{'s' * (count != 1)} (cuda:0 to cuda:{count - 1})"
        )
    _set_deterministic_flags()
    return torch.device("cuda", i)


def device_record(device: torch.device | str) -> dict[str, Any]:
    """What the provenance records about `device`: kind, name, index and the reproducibility caveats."""
    device = torch.device(device)
    record: dict[str, Any] = {"kind": device.type, "name": "cpu", "index": device.index, "caveats": []}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        record |= {
            "name": torch.cuda.get_device_name(index),
            "index": index,
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
            "caveats": list(CUDA_CAVEATS),
        }
    elif device.type == "mps":
        record |= {"name": "mps", "caveats": list(MPS_CAVEATS)}
    elif device.type != "cpu":
        record["name"] = device.type
    return record


def model_device(model: torch.nn.Module) -> torch.device:
    """Where `model` is: its first parameter's or buffer's device (the CPU for a module with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
