"""Inference latency and an efficiency report (params, MACs, latency) of a pruned model vs its compacted form.

Why fold masks before timing: a masked model computes orig*mask on every call and runs the dense kernels, so its
cost is the dense cost; timing the folded copy measures what the model computes, without the mask overhead, which
is the fair "unstructured sparsity buys no speed on dense kernels" baseline. The compacted model (closed channels
removed, `robustprune.sparsity.compact`) is what structured pruning actually buys.

Imported on its own (like metrics.activity) because it needs torch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustprune.errors import UsageError
from robustprune.sparsity.accounting import sparsity_report
from robustprune.sparsity.compact import TOLERANCE, CompactResult, compact
from robustprune.sparsity.masks import model_device_dtype
from robustprune.sparsity.structured import _check_shape, folded_copy


@dataclass(frozen=True)
class Latency:
    """Wall-clock milliseconds per forward pass of one batch: median and 10/25/75/90th percentiles (linear
    interpolation) over `repeats` timed passes after `warmup` untimed ones; `threads` is the intra-op thread
    count in effect while timing."""

    median_ms: float
    p10_ms: float
    p25_ms: float
    p75_ms: float
    p90_ms: float
    mean_ms: float
    repeats: int
    warmup: int
    batch_size: int
    threads: int
    device: str

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_ms": self.median_ms,
            "p10_ms": self.p10_ms,
            "p25_ms": self.p25_ms,
            "p75_ms": self.p75_ms,
            "p90_ms": self.p90_ms,
            "iqr_ms": self.iqr_ms,
            "mean_ms": self.mean_ms,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "device": self.device,
        }


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 64,
    threads: int | None = None,
    repeats: int = 30,
    warmup: int = 5,
    seed: int = 0,
) -> Latency:
    """Time `model`'s forward pass on a fixed uniform [0, 1) batch (seeded) in eval mode under inference_mode.

    Masks are folded on a copy first (see the module docstring); `model` is not changed. `threads` sets
    torch.set_num_threads for the duration and the previous count is restored afterwards. CUDA is synchronised
    around every pass. Randomised forwards (DIO "random" mode) draw from a forked RNG, leaving the caller's alone.
    """
    return measure_latencies(
        [model], input_shape, batch_size=batch_size, threads=threads, repeats=repeats, warmup=warmup, seed=seed
    )[0]


def measure_latencies(
    models: Sequence[nn.Module],
    input_shape: Sequence[int],
    *,
    batch_size: int = 64,
    threads: int | None = None,
    repeats: int = 30,
    warmup: int = 5,
    seed: int = 0,
) -> list[Latency]:
    """`measure_latency` for several models at once, their passes interleaved (a, b, a, b, ...) on the same batch:
    a slow drift of the machine (another process, frequency scaling) then affects every model alike, so their
    ratio is fairer than that of two runs one after the other."""
    shape = _check_shape(input_shape)
    batch_size = _positive_int(batch_size, "batch_size")
    repeats = _positive_int(repeats, "repeats")
    warmup = _positive_int(warmup, "warmup", 0)
    if threads is not None:
        threads = _positive_int(threads, "threads")
    dense = [folded_copy(model).eval() for model in models]
    device, dtype = model_device_dtype(dense[0])
    x = torch.rand((batch_size, *shape), generator=torch.Generator().manual_seed(seed)).to(device=device, dtype=dtype)
    saved = torch.get_num_threads()
    times: list[list[float]] = [[] for _ in dense]
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            for i in range(warmup + repeats):
                for net, kept in zip(dense, times, strict=True):
                    _sync(device)
                    start = time.perf_counter()
                    net(x)
                    _sync(device)
                    elapsed = (time.perf_counter() - start) * 1000.0
                    if i >= warmup:
                        kept.append(elapsed)
    finally:
        torch.set_num_threads(saved)
    out = []
    for kept in times:
        t = torch.tensor(kept, dtype=torch.float64)
        q = torch.quantile(t, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)).tolist()
        out.append(
            Latency(
                median_ms=q[2],
                p10_ms=q[0],
                p25_ms=q[1],
                p75_ms=q[3],
                p90_ms=q[4],
                mean_ms=float(t.mean()),
                repeats=repeats,
                warmup=warmup,
                batch_size=batch_size,
                threads=used,
                device=str(device),
            )
        )
    return out


@dataclass
class Efficiency:
    """The model as given (params all / nonzero, dense and effective MACs, latency of its dense compute) against
    its compacted form; `speedup` = given median / compacted median (> 1: faster)."""

    params: int
    params_nonzero: int
    macs: int
    macs_effective: int
    compact_params: int
    compact_macs: int
    latency: Latency
    compact_latency: Latency
    speedup: float
    channels_removed: int
    removed: dict[str, int]
    max_abs_diff: float
    compacted: CompactResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields; the compacted model itself is left out."""
        return {
            "params": self.params,
            "params_nonzero": self.params_nonzero,
            "macs": self.macs,
            "macs_effective": self.macs_effective,
            "compact_params": self.compact_params,
            "compact_macs": self.compact_macs,
            "latency": self.latency.to_dict(),
            "compact_latency": self.compact_latency.to_dict(),
            "speedup": self.speedup,
            "channels_removed": self.channels_removed,
            "removed": dict(self.removed),
            "max_abs_diff": self.max_abs_diff,
        }


def efficiency_report(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 64,
    threads: int | None = None,
    repeats: int = 30,
    warmup: int = 5,
    seed: int = 0,
    tolerance: float = TOLERANCE,
) -> Efficiency:
    """Params, MACs and latency of `model` and of `compact(model)`; compaction's output check applies
    (RuntimeError beyond `tolerance`). The two latencies use the same batch, threads and repeats, interleaved."""
    shape = _check_shape(input_shape)
    report = sparsity_report(model, shape)
    result = compact(model, shape, tolerance=tolerance, seed=seed)
    timing = {"batch_size": batch_size, "threads": threads, "repeats": repeats, "warmup": warmup, "seed": seed}
    given, small = measure_latencies([model, result.model], shape, **timing)
    return Efficiency(
        params=int(report["all_params"]),
        params_nonzero=int(report["all_nonzero"]),
        macs=int(report["macs_dense"]),
        macs_effective=int(report["macs_effective"]),
        compact_params=result.params_after,
        compact_macs=result.macs_after,
        latency=given,
        compact_latency=small,
        speedup=given.median_ms / small.median_ms if small.median_ms > 0 else float("inf"),
        channels_removed=result.channels_removed,
        removed=dict(result.removed),
        max_abs_diff=result.max_abs_diff,
        compacted=result,
    )
