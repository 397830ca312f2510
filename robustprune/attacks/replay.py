"""Replaying points found elsewhere (the exact MILP search's counterexamples) through the battery engine, so they
are verified against the threat model and judged on the real model like any attack's output.

The engine tells the attack which examples it is handed (Attack.index) and gives it the points to replay
(AttackContext.points, keyed by example); an example without a point gets its clean input back. Without points
(a battery file naming it) the attack does not run.
"""

from __future__ import annotations

import torch
from torch import nn

from robustprune.attacks.base import Attack, register_attack


@register_attack("replay")
class Replay(Attack):
    implementation = "replay of precomputed points (the exact search's counterexamples)"
    uses_gradients = False
    batches_itself = True  # one call with every example, in the order of `index`: rows map to examples directly

    def skip_reason(self) -> str | None:
        if not self.context.points:
            return "nothing to replay: only the exact search hands this attack its points"
        return None

    def perturb_batch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int, batch_size: int
    ) -> torch.Tensor:
        out = x.clone()
        index = self.index if self.index is not None else torch.arange(len(x))
        for row, example in enumerate(index.tolist()):
            point = self.context.points.get(int(example))
            if point is not None:
                out[row] = point.reshape(x[row].shape).to(out)
        return out
