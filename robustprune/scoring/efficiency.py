"""What pruning buys in compute, measured for `score`: params, MACs and latency of the model as given against its
compacted form (robustprune.metrics.latency.efficiency_report). A model the compaction cannot handle (a custom
layer Torch-Pruning does not trace, a TorchScript module) still scores; its report says why nothing was measured.
"""

from __future__ import annotations

import torch
from torch import nn

from robustprune.errors import UsageError
from robustprune.scoring.result import EfficiencyReport, LatencyRecord

LATENCY_BATCH = 64  # fixed batch size and repeats, so reports of the same model on the same machine compare
LATENCY_REPEATS = 30
LATENCY_WARMUP = 5


def measure_efficiency(model: nn.Module, input_shape: tuple[int, ...], *, seed: int = 0) -> EfficiencyReport:
    """Compact `model` (outputs checked to 1e-5) and time both forms, interleaved, at the thread count in effect.
    The caller's RNG state is left untouched."""
    from robustprune.metrics.latency import efficiency_report
    from robustprune.sparsity import sparsity_report

    try:
        report = sparsity_report(model, input_shape)
    except UsageError as exc:
        return EfficiencyReport(params=0, params_nonzero=0, macs=None, macs_effective=None, skipped=str(exc))
    base = {
        "params": int(report["all_params"]),
        "params_nonzero": int(report["all_nonzero"]),
        "macs": report["macs_dense"],
        "macs_effective": report["macs_effective"],
    }
    try:
        with torch.random.fork_rng(devices=[]):
            measured = efficiency_report(
                model, input_shape, batch_size=LATENCY_BATCH, repeats=LATENCY_REPEATS, warmup=LATENCY_WARMUP, seed=seed
            )
    except (UsageError, RuntimeError, TypeError, ValueError, AttributeError, NotImplementedError) as exc:
        # Torch-Pruning's tracer or the output check refused this model: report it, never fail the score.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return EfficiencyReport(**base, skipped=f"compaction not possible: {first}")
    data = measured.to_dict()
    return EfficiencyReport(
        **base,
        compact_params=data["compact_params"],
        compact_macs=data["compact_macs"],
        latency=LatencyRecord.from_json(data["latency"]),
        compact_latency=LatencyRecord.from_json(data["compact_latency"]),
        speedup=data["speedup"],
        channels_removed=data["channels_removed"],
        removed=data["removed"],
        max_abs_diff=data["max_abs_diff"],
    )
