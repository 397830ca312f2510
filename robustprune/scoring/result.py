"""The typed score result: what `score` returns and what results.json holds, field for field.

Every consumer (reports, `check`, sweeps) reads attributes of these records; `to_json` gives the document that
results.json stores (validated against robustprune/schema/score_result.schema.json) and `from_json` reads one back.
Field names follow RobustBench where the meaning matches; accuracies are percentages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustprune.config import BatterySpec
from robustprune.records import Record, extra_field, optional_field, runtime_field
from robustprune.scoring.bounds_report import BoundsReport
from robustprune.scoring.contract import ModelContract
from robustprune.scoring.eps_curve import EpsCurve
from robustprune.scoring.health.records import HealthReport
from robustprune.scoring.per_sample import PerSampleTable

SCHEMA_VERSION = "1.0"


@dataclass
class Finding(Record):
    """A sanity finding (a warning) or an alert, by check id."""

    check: str
    message: str


@dataclass
class AttackEntry(Record):
    """One attack of the battery as it ran: settings, cumulative accuracy after it, cost."""

    name: str
    label: str
    implementation: str
    library: str | None
    library_version: str | None
    norm: str
    eps: float
    settings: dict[str, Any]
    n_attempted: int
    n_broken: int
    robust_acc: float
    robust_acc_ci: list[float]
    seconds: float
    n_forward: int
    n_backward: int
    flags: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the attack did not run on this model
    notes: list[str] = field(default_factory=list)  # what it changed about itself for this model
    role: str = "battery"  # battery | probe (a health check's) | escalation
    extra: dict[str, Any] = extra_field()


@dataclass
class CalibrationMetric(Record):
    value: float | None
    binning: str | None = optional_field()
    n_bins: int | None = optional_field()
    min_count: int | None = optional_field()
    eps: float | None = optional_field()
    convention: str | None = optional_field()


@dataclass
class ReliabilityBin(Record):
    lo: float
    hi: float
    count: int
    accuracy: float | None
    confidence: float | None
    gap: float | None


@dataclass
class Reliability(Record):
    binning: str
    n_bins: int
    bins: list[ReliabilityBin]


@dataclass
class CalibrationSummary(Record):
    """Every calibration number of one side (clean or adversarial), each with its binning."""

    n: int
    ece: CalibrationMetric
    ece_equal_mass: CalibrationMetric
    mce: CalibrationMetric
    classwise_ece: CalibrationMetric
    nll: CalibrationMetric
    brier: CalibrationMetric
    aurc: CalibrationMetric
    reliability: Reliability
    extra: dict[str, Any] = extra_field()

    METRICS = ("ece", "ece_equal_mass", "mce", "classwise_ece", "nll", "brier", "aurc")

    def metric(self, name: str) -> CalibrationMetric:
        if name not in self.METRICS:
            raise KeyError(name)
        return getattr(self, name)


@dataclass
class Calibration(Record):
    clean: CalibrationSummary
    adversarial: CalibrationSummary


@dataclass
class LayerSparsity(Record):
    name: str
    type: str
    shape: list[int]
    numel: int
    nonzero: int
    sparsity: float
    macs_dense: int | None
    macs_effective: int | None


@dataclass
class SparsitySummary(Record):
    """Sparsity on effective weights (DESIGN.md "Sparsity accounting")."""

    sparsity: float
    prunable_params: int
    prunable_nonzero: int
    all_params: int
    all_nonzero: int
    all_sparsity: float
    compression_ratio: float | None
    macs_dense: int | None
    macs_effective: int | None
    layers: list[LayerSparsity]
    extra: dict[str, Any] = extra_field()


@dataclass
class AdversarialExamples:
    """The worst-case adversarial examples of a score: every example an attack broke (clean-correct, then
    misclassified inside the threat model; each was verified by the engine), with its index among the scored
    examples, its true label, the prediction on it and the first attack (battery order, then probes, escalations,
    the audit) that broke it. `x` is on the CPU, in the model's input layout and [0, 1] range."""

    index: np.ndarray  # (k,) int64
    label: np.ndarray  # (k,) int64
    x: np.ndarray  # (k, C, H, W) float32
    x_clean: np.ndarray  # (k, C, H, W) float32
    pred: np.ndarray  # (k,) int64, the prediction on x
    attack: np.ndarray  # (k,) str
    norm: str
    eps: float

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """What `--save-adversarial` writes (numpy.savez, readable with allow_pickle=False)."""
        return {
            "index": self.index,
            "label": self.label,
            "x_adv": self.x,
            "x_clean": self.x_clean,
            "adv_pred": self.pred,
            "attack": self.attack.astype("U"),
            "norm": np.array(self.norm),
            "eps": np.array(self.eps),
        }


@dataclass
class LatencyRecord(Record):
    """Milliseconds per forward pass of one batch (robustprune.metrics.latency): median and spread."""

    median_ms: float
    p10_ms: float
    p25_ms: float
    p75_ms: float
    p90_ms: float
    iqr_ms: float
    mean_ms: float
    repeats: int
    warmup: int
    batch_size: int
    threads: int
    device: str


@dataclass
class EfficiencyReport(Record):
    """What pruning buys in compute: the model as given (its dense kernels, the cost of its dense parent) against
    its compacted form, closed channels removed (robustprune.sparsity.compact, outputs checked). Timings are
    measurements of this machine, not part of the deterministic result."""

    params: int
    params_nonzero: int
    macs: int | None
    macs_effective: int | None
    compact_params: int | None = None
    compact_macs: int | None = None
    latency: LatencyRecord | None = None
    compact_latency: LatencyRecord | None = None
    speedup: float | None = None  # given median / compacted median
    channels_removed: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    max_abs_diff: float | None = None
    skipped: str | None = None  # why no compaction / timing was possible

    def line(self) -> str:
        """One line for people."""
        if self.skipped:
            return f"efficiency: not measured ({self.skipped})"
        assert self.latency is not None and self.compact_latency is not None
        given, small = self.latency, self.compact_latency
        if not self.channels_removed:
            return (
                f"efficiency: no closed channel to remove (unstructured sparsity runs on dense kernels); "
                f"{self.params:,} params, latency {given.median_ms:.2f} ms (IQR {given.iqr_ms:.2f}, batch "
                f"{given.batch_size}, {given.threads} thread{'s' * (given.threads != 1)})"
            )
        macs = f", MACs {_millions(self.macs)} -> {_millions(self.compact_macs)}" if self.macs else ""
        return (
            f"efficiency: compacted ({self.channels_removed} channels removed) params {self.params:,} -> "
            f"{self.compact_params:,}{macs}; latency {given.median_ms:.2f} -> {small.median_ms:.2f} ms "
            f"(x{self.speedup:.2f}; IQR {given.iqr_ms:.2f} / {small.iqr_ms:.2f} ms, median of {given.repeats}, batch "
            f"{given.batch_size}, {given.threads} thread{'s' * (given.threads != 1)}, {given.device})"
        )


def _millions(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.3g}M"


@dataclass
class Cost(Record):
    seconds: float
    n_forward: int
    n_backward: int


@dataclass
class DataInfo(Record):
    source: str
    split: str
    fingerprint: str
    input_shape: list[int]


@dataclass
class CheckpointRecord(Record):
    """The weights' file as loaded (robustprune.models.CheckpointInfo)."""

    path: str
    sha256: str
    format: str
    trusted: bool
    folded_pruning: bool
    manifest: dict[str, Any] | None
    size_bytes: int = 0
    masked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was ignored and why (an unproven manifest, its parent)
    extra: dict[str, Any] = extra_field()


@dataclass
class Provenance(Record):
    """Where a number came from: versions, seed, threads, command, checkpoint, the battery as resolved."""

    robustprune: str
    versions: dict[str, str | None]
    python: str
    platform: str
    seed: int
    threads: int
    device: str
    command: list[str] | None
    created: str
    checkpoint: CheckpointRecord | None = None
    batch_size: int | None = optional_field()
    battery: BatterySpec | None = optional_field()
    battery_additions: list[dict[str, Any]] | None = optional_field()
    device_info: dict[str, Any] | None = optional_field()  # robustprune.devices.device_record; absent in old files
    extra: dict[str, Any] = extra_field()


@dataclass
class OfficialProtocolReport(Record):
    """DIO's official evaluation (attack_dio.py of fanghenshaometeor/DIversity-via-Orthogonality): one attack
    crafted through the random-head forward (a new random head at every forward), then re-classified by every head.
    Weaker than the adaptive numbers; for comparison with the paper only, never a headline."""

    protocol: str
    note: str
    attack: dict[str, Any]  # name, norm, eps, steps, step_size, rel_step, random_start, forward
    counted_as: str
    n_heads: int
    n_examples: int
    per_head_robust_acc: list[float]
    mean_head_robust_acc: float
    std_head_robust_acc: float
    worst_head_robust_acc: float
    max_perturbation: float  # the largest verified perturbation norm (<= eps)
    n_forward: int
    n_backward: int
    extra: dict[str, Any] = extra_field()


@dataclass
class MultiHeadReport(Record):
    """Per-head accuracy of a multi-head randomized defense (DIO), each head attacked alone in fixed mode; and,
    apart, the official protocol's numbers (`official_protocol`, for comparison with the paper only)."""

    randomized: bool
    n_heads: int
    original_mode: str | None
    scored_mode: str
    adaptive_attack: dict[str, Any]
    per_head_battery: str
    per_head_clean_acc: list[float]
    per_head_robust_acc: list[float]
    worst_head_robust_acc: float
    mean_head_robust_acc: float
    std_head_robust_acc: float
    worst_head_clean_acc: float
    mean_head_clean_acc: float
    n_forward: int  # every per-head run's and the official protocol's passes, in examples
    n_backward: int
    seconds: float = 0.0
    official_protocol: OfficialProtocolReport | None = optional_field()
    extra: dict[str, Any] = extra_field()


@dataclass
class AuditReport(Record):
    """The reference attack on a seeded sample of the battery's survivors (scoring/audit.py).

    gap_points: the share of audited survivors the reference broke, scaled to all survivors, in points of robust
        accuracy: the estimated gap of the battery to the reference. gap_upper_points: its Clopper-Pearson upper
        bound at `confidence`. The audit's breaks already count in robust_acc (the union of both).
    """

    attack: str
    n_survivors: int
    n_audited: int
    n_broken: int
    broken_index: list[int]  # the audited examples the reference broke (indices into the scored examples)
    rounds: int
    fraction: float
    gap_points: float
    gap_upper_points: float
    confidence: float
    seconds: float
    skipped: str | None = None
    sample_index: list[int] = field(default_factory=list)  # every audited example, sorted
    error: str | None = optional_field()  # the audit raised: nothing it found counts, the verdict is at least caution

    def line(self) -> str:
        """One line for people: what was audited, what the reference found, the bound."""
        if self.error:
            return f"AUDIT FAILED ({self.attack}): {self.error}"
        if self.skipped:
            return f"audit ({self.attack}) skipped: {self.skipped}"
        if self.n_survivors == 0:
            return f"audit ({self.attack}): nothing to audit, every example was broken"
        missed = (
            f"the reference broke {self.n_broken} the battery missed (counted; verdict caution)"
            if self.n_broken
            else "the reference broke none"
        )
        return (
            f"audit ({self.attack}): {self.n_audited} of {self.n_survivors} survivors in {self.rounds} "
            f"round{'s' if self.rounds > 1 else ''}, {missed}; gap to the reference <= "
            f"{self.gap_upper_points:.2f} points ({self.confidence:.0%} Clopper-Pearson)"
        )


@dataclass
class ScoreResult(Record):
    """One model scored on one dataset under one battery (results.json), plus the probabilities calibration was
    computed from (kept beside the document in probabilities.npz, never inside it). Write one with
    `robustprune.save_result(result, out_dir)`."""

    schema_version: str
    kind: str
    dataset: str
    architecture: str
    threat_model: str
    norm: str
    eps: float
    n_examples: int
    num_classes: int
    clean_acc: float
    clean_acc_ci: list[float]
    robust_acc: float
    robust_acc_ci: list[float]
    autoattack_acc: float | None
    ci_method: str
    ci_confidence: float
    battery: str
    attacks: list[AttackEntry]
    randomized: bool
    n_eval_passes: int
    calibration: Calibration
    sparsity: SparsitySummary | None
    warnings: list[Finding]
    cost: Cost
    data: DataInfo
    provenance: Provenance
    per_sample: PerSampleTable | None = None  # absent only in a document `check` reads to say it is not comparable
    alerts: list[Finding] = field(default_factory=list)
    multi_head: MultiHeadReport | None = optional_field()
    verdict: str | None = optional_field()  # trusted | caution | untrusted (None: scored before verdicts existed)
    health: HealthReport | None = optional_field()
    audit: AuditReport | None = optional_field()
    bounds: BoundsReport | None = optional_field()  # the bracket: certified lower bound, exact value (--certify)
    efficiency: EfficiencyReport | None = optional_field()
    eps_curve: EpsCurve | None = optional_field()  # robust accuracy vs eps, upper bounds (--eps-grid)
    eps_curve_skipped: str | None = optional_field()  # why a curve that was asked for was not drawn
    model_contract: ModelContract | None = optional_field()  # what the model contract found (scoring/contract.py)
    stage_errors: list[Finding] | None = optional_field()  # stages after the battery that raised, and why
    extra: dict[str, Any] = extra_field()
    clean_probs: np.ndarray | None = runtime_field()
    adversarial_probs: np.ndarray | None = runtime_field()
    adversarial: AdversarialExamples | None = runtime_field()  # the broken examples themselves (not in the JSON)

    @classmethod
    def coerce(cls, result: ScoreResult | dict[str, Any]) -> ScoreResult:
        """A ScoreResult as given, or one read from its JSON document (as results.json holds it)."""
        return result if isinstance(result, ScoreResult) else cls.from_json(result)

    @property
    def document(self) -> dict[str, Any]:
        """The JSON document (what results.json holds)."""
        return self.to_json()

    def attack_labels(self) -> list[str]:
        """The battery's attack labels in order (the per-sample table's JSON keys are not ordered); probes and
        escalations, which only some runs have, are left out (the worst case includes them)."""
        return [a.label for a in self.attacks if a.role == "battery"]

    def correct_vectors(self) -> dict[str, np.ndarray]:
        """Metric name -> per-example "still correct" vector (clean, after each attack, worst case)."""
        if self.per_sample is None:
            raise ValueError("the result has no per-sample table")
        return self.per_sample.correct_vectors(self.attack_labels())

    def broken(self) -> np.ndarray:
        if self.per_sample is None:
            raise ValueError("the result has no per-sample table")
        return self.per_sample.broken.copy()
