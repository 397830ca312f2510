"""The record a sweep keeps per cell (cell.json): what the sweep report and `check` read without opening the full
score document, which it points at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustprune.config import BatterySpec
from robustprune.records import Record, extra_field, optional_field
from robustprune.scoring.result import ScoreResult


@dataclass
class CellConfig(Record):
    """A cell's resolved configuration, the thing its key names: the recipe as resolved, the target, the seed, the
    parent's key, and what every cell of a sweep shares (data, battery, batch size, threads, version)."""

    dataset: str | None = None
    data_fingerprint: str | None = None
    n: int | None = None
    battery: dict[str, Any] | None = None  # BatterySpec.to_dict() without its source path
    head_battery: dict[str, Any] | None = None
    batch_size: int | None = None
    threads: int | None = None
    robustprune: str | None = None
    recipe: dict[str, Any] | None = None  # Recipe.to_dict() without its source path
    recipe_name: str | None = None
    sparsity: float | None = None
    seed: int | None = None
    epochs: int | None = None
    parent: str | None = None
    eps_grid: list[float] | None = optional_field()  # eps curve grid (absent when none: keys stay unchanged)
    certify: dict[str, Any] | None = optional_field()  # CertifySpec.to_dict() when the sweep set one
    extra: dict[str, Any] = extra_field()

    def battery_spec(self) -> BatterySpec | None:
        return BatterySpec.from_dict(self.battery) if self.battery else None

    def head_battery_spec(self) -> BatterySpec | None:
        return BatterySpec.from_dict(self.head_battery) if self.head_battery else None


@dataclass
class CellRecord(Record):
    key: str
    recipe: str
    sparsity: float  # target
    seed: int
    parent_key: str | None
    config: CellConfig
    architecture: str | None = None
    achieved_sparsity: float | None = None
    clean_acc: float | None = None
    robust_acc: float | None = None
    attacks: dict[str, float] = field(default_factory=dict)  # label -> accuracy after it (cumulative)
    ece_clean: float | None = None
    ece_adv: float | None = None
    nll_clean: float | None = None
    nll_adv: float | None = None
    randomized: bool = False
    train_seconds: float | None = None
    score_seconds: float | None = None
    n_forward: int | None = None
    n_backward: int | None = None
    worst_head_robust_acc: float | None = None
    verdict: str | None = None  # the evaluation verdict (trusted / caution / untrusted); None before it existed
    verdict_reasons: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # health check id -> status (pass / warn / fail / skip)
    battery_robust_acc: float | None = None  # the battery's own worst case, before probes and escalations
    audit_n_audited: int | None = None  # survivors the audit's reference attack ran on (None: no audit)
    audit_n_broken: int | None = None  # of those, broken by the reference (they count in robust_acc)
    audit_gap_upper: float | None = None  # Clopper-Pearson upper bound on the battery's gap, in points
    result: str | None = None  # the score document, relative to the sweep directory
    # True: the recipe's defense is robustprune's reconstruction of a paper it could not read (Deadwooding); the
    # report marks such rows. Absent (None) for every other cell, so existing records read and write unchanged.
    reconstruction: bool | None = optional_field()
    # Activity (from the train manifest): the dead-ReLU rate in eval mode on the validation probe, and the dynamic
    # rate AP targets (train-mode passes of the last epoch). Structured recipes: the share of channels closed.
    dead_relu_eval: float | None = optional_field()
    dead_relu_train: float | None = optional_field()
    channel_sparsity: float | None = optional_field()
    # Efficiency (the score's measurement on this machine): the model as given against its compacted form.
    params: int | None = optional_field()
    compact_params: int | None = optional_field()
    macs: int | None = optional_field()
    compact_macs: int | None = optional_field()
    latency_ms: float | None = optional_field()
    compact_latency_ms: float | None = optional_field()
    speedup: float | None = optional_field()
    # Robust accuracy vs eps from one minimum-norm run (upper bounds; the score's eps_curve), when the sweep asked for it.
    eps_curve_attack: str | None = optional_field()
    eps_curve_grid: list[float] | None = optional_field()
    eps_curve_acc: list[float] | None = optional_field()
    median_min_distance: float | None = optional_field()
    # The bracket (the score's bounds): certified lower bound, exact value where nothing was left undecided.
    certified_acc: float | None = optional_field()
    exact_acc: float | None = optional_field()
    bounds_method: str | None = optional_field()
    extra: dict[str, Any] = extra_field()

    @property
    def label(self) -> str:
        return f"{self.recipe} s={self.sparsity:g} seed={self.seed}"

    @property
    def match_key(self) -> tuple[str, float, int]:
        """How `check` pairs cells of two sweeps: keys hash the full config, which a regression run changes."""
        return self.recipe, self.sparsity, self.seed

    @classmethod
    def summarize(
        cls,
        *,
        key: str,
        recipe: str,
        sparsity: float,
        seed: int,
        parent_key: str | None,
        config: CellConfig,
        result: ScoreResult,
        architecture: str | None,
        train_seconds: float | None,
        result_path: str | None,
        reconstruction: bool = False,
        manifest: dict[str, Any] | None = None,
    ) -> CellRecord:
        """The record of a finished cell from its score result (and its train manifest, for activity)."""
        calibration, audit, efficiency = result.calibration, result.audit, result.efficiency
        final = (manifest or {}).get("final") or {}
        channels = ((manifest or {}).get("sparsity") or {}).get("channels") or {}
        timed = efficiency is not None and efficiency.latency is not None and efficiency.compact_latency is not None
        curve = result.eps_curve
        bounds = result.bounds
        return cls(
            key=key,
            recipe=recipe,
            sparsity=sparsity,
            seed=seed,
            parent_key=parent_key,
            config=config,
            architecture=architecture,
            achieved_sparsity=result.sparsity.sparsity if result.sparsity is not None else None,
            clean_acc=result.clean_acc,
            robust_acc=result.robust_acc,
            attacks={a.label: a.robust_acc for a in result.attacks if a.role == "battery"},
            ece_clean=calibration.clean.ece.value,
            ece_adv=calibration.adversarial.ece.value,
            nll_clean=calibration.clean.nll.value,
            nll_adv=calibration.adversarial.nll.value,
            randomized=result.randomized,
            train_seconds=train_seconds,
            score_seconds=result.cost.seconds,
            n_forward=result.cost.n_forward,
            n_backward=result.cost.n_backward,
            worst_head_robust_acc=result.multi_head.worst_head_robust_acc if result.multi_head is not None else None,
            verdict=result.verdict,
            verdict_reasons=list(result.health.reasons) if result.health is not None else [],
            checks={c.id: c.status for c in result.health.checks} if result.health is not None else {},
            battery_robust_acc=result.health.battery_robust_acc if result.health is not None else None,
            audit_n_audited=audit.n_audited if audit is not None else None,
            audit_n_broken=audit.n_broken if audit is not None else None,
            audit_gap_upper=audit.gap_upper_points if audit is not None else None,
            result=result_path,
            reconstruction=True if reconstruction else None,
            dead_relu_eval=final.get("dead_relu_rate"),
            dead_relu_train=final.get("dead_relu_rate_train"),
            channel_sparsity=channels.get("sparsity"),
            params=efficiency.params if efficiency is not None and not efficiency.skipped else None,
            compact_params=efficiency.compact_params if efficiency is not None else None,
            macs=efficiency.macs if efficiency is not None and not efficiency.skipped else None,
            compact_macs=efficiency.compact_macs if efficiency is not None else None,
            latency_ms=efficiency.latency.median_ms if timed else None,
            compact_latency_ms=efficiency.compact_latency.median_ms if timed else None,
            speedup=efficiency.speedup if timed else None,
            eps_curve_attack=curve.attack if curve is not None else None,
            eps_curve_grid=list(curve.grid) if curve is not None else None,
            eps_curve_acc=list(curve.robust_acc) if curve is not None else None,
            median_min_distance=curve.median_distance if curve is not None else None,
            certified_acc=bounds.certified_acc if bounds is not None else None,
            exact_acc=bounds.exact_acc if bounds is not None else None,
            bounds_method=bounds.method if bounds is not None and bounds.method != "none" else None,
        )
