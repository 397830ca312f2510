"""The reference AutoAttack (Croce & Hein 2020, arXiv:2003.01690) through pyautoattack, run as upstream runs it.

Only this adapter may be called "autoattack". It passes the run's seed (upstream defaults to a time-based seed)
and hands every unbroken example to AutoAttack at once with the battery's batch size, so its internal batching,
and hence its per-sample result, equals a direct `run_standard_evaluation` on the same examples. Its sanity
flags, sent to the `auto-attack` logger, are captured and reported.
"""

from __future__ import annotations

import logging

import torch

from robustprune.attacks.base import Attack, check_choice, register_attack


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@register_attack("autoattack")
class AutoAttack(Attack):
    defaults = {"version": "standard"}
    implementation = "pyautoattack.AutoAttack"
    library = "pyautoattack"
    batches_itself = True
    min_classes = 10  # the standard version attacks 9 target classes

    def validate(self) -> None:
        check_choice(self, "version", ("standard", "plus"))
        self.flags: list[str] = []

    def perturb_batch(self, model, x, y, *, seed, batch_size):
        from pyautoattack import AutoAttack as ReferenceAutoAttack

        device = x.device
        adversary = ReferenceAutoAttack(
            model,
            norm=self.threat.norm,
            eps=self.threat.eps,
            version=str(self.settings["version"]),
            seed=seed,
            device=device,
        )
        logger = logging.getLogger("auto-attack")
        handler = _Collect()
        logger.addHandler(handler)
        try:
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        finally:
            logger.removeHandler(handler)
        self.flags.extend(handler.messages)
        return x_adv.detach().to(device, torch.float32)
