"""The model contract, checked once before any compute: what a model must be for its numbers to mean anything.

On two small clean batches (the first k examples, twice, then the next k with the first k in reverse order) the model
must return a floating tensor of shape (N, classes) for N inputs (every call is checked by the guard,
models/guard.py), finite logits, and the same row for an example whatever else is in its batch. A model whose rows
depend on the batch composition is scored as randomized (every verdict over repeated passes, EOT attacks): an
attack crafted on one batch and judged on another would otherwise flatter or wrong it. Its own state must not move
(parameters, buffers, modes), and its prune masks must be 0/1 of their weight's shape. What the check finds is
recorded in the result (`model_contract`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustprune.errors import UsageError
from robustprune.models.guard import ModelGuard, ModelState
from robustprune.models.state import check_model_masks
from robustprune.records import Record, extra_field

CONTRACT_BATCH = 8  # examples per clean batch
# Rows of the same example in two batch compositions may differ by float rounding (blocked matrix products): the
# normalized logit rows are compared with this tolerance, or a few units of the model's own precision.
BATCH_TOLERANCE = 1e-4


@dataclass
class ModelContract(Record):
    """What the model contract found (results.json `model_contract`)."""

    model_dtype: str  # the dtype of its parameters ("float32", "float16", ... or "mixed or none")
    input_dtype: str  # what it is fed (float32 inputs are cast to its own dtype, differentiably)
    output_dtype: str  # what it returned (float16 / bfloat16 logits are widened to float32 exactly)
    batch_independent: bool | None  # None: not measurable, the forward pass is not deterministic (S2's business)
    batch_difference: float  # the largest difference of an example's normalized logits across the two batches
    inputs_copied: bool  # every call got copies of its inputs (False only for a module refusing the wrapper)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = extra_field()

    def line(self) -> str:
        batch = {
            True: "batch-independent",
            False: "BATCH-DEPENDENT (scored as randomized)",
            None: "not deterministic (batch independence not measurable)",
        }[self.batch_independent]
        return (
            f"model contract: {self.output_dtype} logits from a {self.model_dtype} model fed {self.input_dtype}, "
            f"{batch}"
        )


def _tolerance(guard: ModelGuard) -> float:
    dtype = guard.model_dtype if guard.model_dtype is not None and guard.model_dtype.is_floating_point else None
    return max(BATCH_TOLERANCE, 10 * torch.finfo(dtype).eps) if dtype is not None else BATCH_TOLERANCE


def _difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest distance between the normalized logit rows of the same examples."""
    rows = torch.nn.functional.normalize(a, dim=1) - torch.nn.functional.normalize(b, dim=1)
    return float(rows.norm(dim=1).max()) if len(rows) else 0.0


def check_contract(model: nn.Module, guard: ModelGuard, x: torch.Tensor, state: ModelState) -> ModelContract:
    """Run the contract's two clean batches through the guarded model (UsageError on a breach: exit 2)."""
    check_model_masks(model, "the model")
    k = min(CONTRACT_BATCH, len(x))
    first = x[:k]
    second = torch.cat([x[k : 2 * k], first.flip(0)])
    with torch.no_grad():
        a = model(first).double()
        again = model(first).double()
        b = model(second).double()[-k:].flip(0)
    state.require_unchanged(
        model,
        lambda what: UsageError(
            f"the model changes its own state in an eval-mode forward pass ({what}), so every number would depend on "
            "what ran before; make its forward pass stateless (the model was restored)"
        ),
    )
    for out, which in ((a, "first"), (b, "second")):
        bad = ~torch.isfinite(out).all(dim=1)
        if bool(bad.any()):
            raise UsageError(
                f"the model returns NaN or infinite logits on clean inputs (example {int(bad.nonzero()[0, 0])} of the "
                f"{which} contract batch); fix the forward pass (a log of zero, a division, an overflowing dtype)"
            )
    tolerance = _tolerance(guard)
    deterministic = _difference(a, again) <= tolerance  # noise in the forward pass is not batch dependence
    difference = _difference(a, b)
    independent = difference <= tolerance if deterministic else None
    record = guard.record()
    notes = []
    if record["input_dtype"] in ("float16", "bfloat16"):
        notes.append(
            f"the model computes in {record['input_dtype']}: inputs are rounded to it before the model sees them "
            "(attacks and verification work on the float32 inputs)"
        )
    elif record["input_dtype"] != "float32":
        notes.append(
            f"the model computes in {record['input_dtype']}: inputs are cast to it (exactly) before it sees them"
        )
    if not record["inputs_copied"]:
        notes.append("the model refused the boundary's wrapper: its calls do not get copies of their inputs")
    if independent is None:
        notes.append("the same batch gives different logits twice: batch independence cannot be measured")
    elif not independent:
        notes.append(
            f"an example's logits change with the other examples in its batch (by up to {difference:.3g}): scored "
            "as randomized, each verdict over repeated passes"
        )
    return ModelContract(
        model_dtype=record["model_dtype"],
        input_dtype=record["input_dtype"],
        output_dtype=record["output_dtype"],
        batch_independent=independent,
        batch_difference=difference,
        inputs_copied=record["inputs_copied"],
        notes=notes,
    )
