"""The per-sample table, the primary result: every aggregate of a score is derived from it, and paired statistics
between two models scored on the same examples read it.

Columns are numpy arrays. Per attack (in battery order): whether the attack was attempted on the example (it runs
only on examples still unbroken), whether it broke it, the adversarial prediction and confidence (-1 / NaN where
not attempted) and the perturbation norm. In JSON, missing values are null and the attacks are an object keyed by
label (its key order is not the battery's: the document's `attacks` list gives the order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustprune.attacks.battery import AttackColumns
from robustprune.jsonio import to_jsonable

CLEAN = "clean acc"
WORST = "robust acc (worst case)"


def attack_metric(label: str) -> str:
    """The name of the accuracy after attack `label` (and every attack before it)."""
    return f"robust acc after {label}"


def _array(values: Sequence[Any], dtype: Any, missing: Any) -> np.ndarray:
    return np.asarray([missing if v is None else v for v in values], dtype=dtype)


@dataclass
class PerSampleTable:
    index: np.ndarray
    label: np.ndarray
    clean_pred: np.ndarray
    clean_conf: np.ndarray
    clean_correct: np.ndarray
    broken: np.ndarray  # broken by any attack, or misclassified clean
    attacks: dict[str, AttackColumns]
    status: np.ndarray | None = None  # per example, where bounds ran: wrong | broken | certified | proved | unknown

    def __len__(self) -> int:
        return len(self.label)

    def correct_vectors(self, order: Sequence[str]) -> dict[str, np.ndarray]:
        """Metric name -> per-example "still correct" vector: clean, after each attack of `order` (labels in
        battery order, cumulative), and the worst case."""
        vectors = {CLEAN: self.clean_correct.copy()}
        broken = ~self.clean_correct
        for label in order:
            broken = broken | self.attacks[label].broken
            vectors[attack_metric(label)] = ~broken
        vectors[WORST] = ~self.broken
        return vectors

    def median_norm(self, label: str) -> float | None:
        """Median perturbation norm of the examples attack `label` broke (None when it broke none)."""
        column = self.attacks.get(label)
        if column is None:
            return None
        norms = column.norm[column.broken & ~np.isnan(column.norm)]
        return float(np.median(norms)) if len(norms) else None

    def labels_only(self) -> PerSampleTable:
        """The table cut down to its labels (what pairing checks), for holding many results in memory at once."""
        empty = np.zeros(0)
        return PerSampleTable(empty, self.label, empty, empty, np.zeros(0, bool), np.zeros(0, bool), attacks={})

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index.astype(int).tolist(),
            "label": self.label.astype(int).tolist(),
            "clean_pred": self.clean_pred.astype(int).tolist(),
            "clean_conf": self.clean_conf.astype(float).tolist(),
            "clean_correct": self.clean_correct.astype(bool).tolist(),
            "broken": self.broken.astype(bool).tolist(),
            "attacks": {
                label: {
                    "attempted": cols.attempted.tolist(),
                    "broken": cols.broken.tolist(),
                    "adv_pred": [int(p) if a else None for p, a in zip(cols.adv_pred, cols.attempted)],
                    "adv_conf": to_jsonable(cols.adv_conf.astype(float)),
                    "norm": to_jsonable(cols.norm.astype(float)),
                }
                for label, cols in self.attacks.items()
            },
        } | ({"status": [str(s) for s in self.status]} if self.status is not None else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PerSampleTable:
        attacks = {
            str(label): AttackColumns(
                attempted=_array(col["attempted"], bool, False),
                broken=_array(col["broken"], bool, False),
                adv_pred=_array(col["adv_pred"], np.int64, -1),
                adv_conf=_array(col["adv_conf"], float, np.nan),
                norm=_array(col["norm"], float, np.nan),
            )
            for label, col in (data.get("attacks") or {}).items()
        }
        return cls(
            index=_array(data["index"], np.int64, -1),
            label=_array(data["label"], np.int64, -1),
            clean_pred=_array(data["clean_pred"], np.int64, -1),
            clean_conf=_array(data["clean_conf"], float, np.nan),
            clean_correct=_array(data["clean_correct"], bool, False),
            broken=_array(data["broken"], bool, False),
            attacks=attacks,
            status=np.asarray(data["status"], dtype=object) if data.get("status") is not None else None,
        )
