"""Latency measurement (ordered percentiles, thread count set and restored, model untouched) and the efficiency
report of a structurally pruned model against its compacted form."""

from __future__ import annotations

import json

import pytest
import torch

from robustprune.errors import UsageError
from robustprune.metrics.latency import Latency, efficiency_report, measure_latency
from robustprune.models import build_model
from robustprune.sparsity import PRUNING_CRITERIA, apply_masks, global_magnitude
from robustprune.sparsity.structured import apply_structured

DIGITS = (1, 8, 8)


def digits_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("digits_cnn", 10, DIGITS)


def test_latency_percentiles_and_thread_restore() -> None:
    model = build_model("mlp", 10, DIGITS)
    torch.set_num_threads(1)
    lat = measure_latency(model, DIGITS, batch_size=8, threads=2, repeats=7, warmup=1)
    assert torch.get_num_threads() == 1
    assert isinstance(lat, Latency) and lat.threads == 2 and lat.repeats == 7 and lat.batch_size == 8
    assert 0 < lat.p10_ms <= lat.p25_ms <= lat.median_ms <= lat.p75_ms <= lat.p90_ms
    assert lat.iqr_ms >= 0 and lat.device == "cpu"
    json.dumps(lat.to_dict())
    assert measure_latency(model, DIGITS, batch_size=2, repeats=3, warmup=0).threads == 1


def test_latency_leaves_a_masked_model_as_it_was() -> None:
    model = digits_cnn()
    apply_masks(model, global_magnitude(model, 0.5))
    model.train()
    x = torch.rand(2, *DIGITS)
    with torch.no_grad():
        before = model(x)
    state = torch.get_rng_state()
    measure_latency(model, DIGITS, batch_size=4, repeats=3, warmup=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training and hasattr(model.features[0], "weight_mask")
    with torch.no_grad():
        assert torch.equal(model(x), before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"repeats": 0}, "repeats"),
        ({"threads": 0}, "threads"),
        ({"warmup": -1}, "warmup"),
    ],
)
def test_latency_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        measure_latency(build_model("mlp", 10, DIGITS), DIGITS, **kwargs)


def test_efficiency_report_of_a_channel_pruned_cnn() -> None:
    model = digits_cnn()
    apply_structured(model, DIGITS, PRUNING_CRITERIA.get("layerwise_channel_l1")(model, 0.5, input_shape=DIGITS))
    eff = efficiency_report(model, DIGITS, batch_size=16, threads=1, repeats=5, warmup=1)
    assert eff.params_nonzero < eff.params and eff.macs_effective < eff.macs
    assert eff.compact_params < eff.params and eff.compact_macs < eff.macs
    assert eff.channels_removed == 112 and eff.removed == {"features.0": 16, "features.2": 32, "classifier.0": 64}
    assert eff.max_abs_diff <= 1e-5
    assert eff.latency.median_ms > 0 and eff.compact_latency.median_ms > 0
    assert eff.speedup == pytest.approx(eff.latency.median_ms / eff.compact_latency.median_ms)
    out = eff.to_dict()
    json.dumps(out)
    assert out["compact_latency"]["threads"] == 1 and "compacted" not in out
