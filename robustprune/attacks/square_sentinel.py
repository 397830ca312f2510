"""A Square-attack sentinel: the reference Square (pyautoattack) on a seeded sample of the survivors.

Gradient attacks fail silently on masked gradients; a gradient-free attack does not. Running Square on every
survivor is half of AutoAttack's cost, and on a model with honest gradients it breaks nothing, so the sentinel
spends `n_queries` on a random `fraction` of the survivors (at least `min_size`). If it breaks any, the gradients
cannot be trusted to have found the rest either: Square then runs on every survivor with `full_queries`, and the
attack says so in its notes (the health checks see the breaks like any attack's).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from robustprune.attacks.base import Attack, check_positive, register_attack


@register_attack("square_sentinel")
class SquareSentinel(Attack):
    uses_gradients = False
    batches_itself = True
    library = "pyautoattack"
    defaults = {"fraction": 0.05, "min_size": 5, "n_queries": 500, "full_queries": 5000, "p_init": 0.8}
    implementation = (
        "pyautoattack.SquareAttack (reference, AutoAttack's schedule) on a seeded sample of survivors; on every "
        "survivor with full_queries if the sample yields a break"
    )

    def validate(self) -> None:
        check_positive(self, "fraction", "min_size", "n_queries", "full_queries", "p_init")

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        n = len(x)
        size = min(n, max(int(self.settings["min_size"]), math.ceil(float(self.settings["fraction"]) * n)))
        sample = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
        out = x.clone()
        idx = torch.from_numpy(sample).to(x.device)
        out[idx] = self._square(model, x[idx], y[idx], int(self.settings["n_queries"]), seed, batch_size)
        with torch.no_grad():
            hits = int((model(out[idx]).argmax(dim=1) != y[idx]).sum())
        self.notes[:] = [f"sentinel: Square ({self.settings['n_queries']} queries) broke {hits} of {size} sampled"]
        if hits and size < n:
            rest = torch.from_numpy(np.setdiff1d(np.arange(n), sample)).to(x.device)
            out[rest] = self._square(model, x[rest], y[rest], int(self.settings["full_queries"]), seed, batch_size)
            self.notes.append(
                f"the sentinel fired: Square ran on all {n} survivors with {self.settings['full_queries']} queries"
            )
        return out

    def _square(self, model, x, y, n_queries, seed, batch_size):
        from pyautoattack.square import SquareAttack

        square = SquareAttack(
            model,
            norm=self.threat.norm,
            n_queries=n_queries,
            eps=self.threat.eps,
            p_init=float(self.settings["p_init"]),
            n_restarts=1,
            seed=seed,
            loss="margin",
            resc_schedule=False,  # as AutoAttack builds it
            device=x.device,
        )
        out = []
        for start in range(0, len(x), batch_size):
            out.append(square.perturb(x[start : start + batch_size], y[start : start + batch_size]).detach())
        return torch.cat(out).to(x) if out else x.clone()
