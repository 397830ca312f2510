"""`score` measures what pruning buys: the model as given against its compacted form (params, MACs, latency),
and a model the compaction cannot handle still scores, its report saying why nothing was measured."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from robustprune.models import build_model
from robustprune.render.text import summary_table
from robustprune.scoring import score
from robustprune.sparsity import PRUNING_CRITERIA, apply_structured


def test_structured_model_is_compacted_and_timed() -> None:
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, (1, 8, 8))
    masks = PRUNING_CRITERIA.get("layerwise_channel_l1")(model, 0.5, input_shape=(1, 8, 8))
    apply_structured(model, (1, 8, 8), masks)
    result = score(model, "digits", "quick", eps=0.1, n=8, seed=0)
    e = result.efficiency
    assert e is not None and e.skipped is None
    assert e.channels_removed == 16 + 32 + 64 and e.compact_params < e.params and e.compact_macs < e.macs
    assert e.max_abs_diff <= 1e-5
    assert e.speedup == e.latency.median_ms / e.compact_latency.median_ms
    assert e.latency.p10_ms <= e.latency.median_ms <= e.latency.p90_ms and e.latency.batch_size == 64
    assert "efficiency: compacted (112 channels removed)" in summary_table(result)
    assert result.document["efficiency"]["compact_latency"]["repeats"] == 30


def test_unstructured_model_has_nothing_to_remove_and_the_score_is_unchanged() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", 10, (1, 8, 8))
    with_it = score(model, "digits", "quick", eps=0.1, n=8, seed=0)
    without = score(model, "digits", "quick", eps=0.1, n=8, seed=0, efficiency=False)
    assert with_it.efficiency.channels_removed == 0 and with_it.efficiency.compact_params == with_it.efficiency.params
    assert without.efficiency is None and "efficiency" not in without.document
    assert with_it.document["per_sample"] == without.document["per_sample"]  # measuring draws no shared randomness


def test_a_model_compaction_cannot_handle_still_scores() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    result = score(scripted, "digits", "quick", eps=0.1, n=8, seed=0)
    assert result.efficiency is not None and result.efficiency.skipped
    assert "efficiency: not measured" in summary_table(result)
