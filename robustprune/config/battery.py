"""Threat models and batteries: typed specs read from TOML, with errors that name the file and key."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from robustprune.config.eps import MAX_EPS, check_eps_grid, parse_eps, parse_eps_grid
from robustprune.config.files import (
    check_import_allowed,
    find_spec_file,
    read_toml,
    reject_unknown,
    spec_dirs,
    spec_source,
)
from robustprune.config.settings import ParamValue
from robustprune.errors import UsageError
from robustprune.validation import escape

Norm = Literal["Linf", "L2"]
NORMS: tuple[str, ...] = ("Linf", "L2")

# Above these an eps is not a threat model but a typo: Linf 1.0 already reaches every image in [0,1].


@dataclass(frozen=True, kw_only=True)
class ThreatModel:
    norm: Norm
    eps: float

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise UsageError(f"unknown norm {self.norm!r}: use one of {', '.join(NORMS)}")
        eps = self.eps
        if isinstance(eps, str):  # "8/255", "0.031": as people write it
            eps = parse_eps(eps)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
            raise UsageError(f"eps must be a finite number, got {eps!r}")
        if eps < 0:
            raise UsageError(f"eps {eps} is negative: use a value >= 0 in pixel units of [0,1] inputs")
        if eps > MAX_EPS[self.norm]:
            raise UsageError(
                f"eps {eps} is absurd for {self.norm} on inputs in [0,1] (max {MAX_EPS[self.norm]:g}); "
                "eps is in pixel units, e.g. 8/255 = 0.0314 for Linf"
            )
        object.__setattr__(self, "eps", float(eps))

    def check_input_dim(self, n_features: int) -> None:
        """An L2 ball wider than the whole [0,1] box means eps was given in the wrong units."""
        if self.norm == "L2" and self.eps > math.sqrt(n_features):
            raise UsageError(
                f"L2 eps {self.eps} exceeds the diameter of the input box ({math.sqrt(n_features):.3g} for "
                f"{n_features} features); eps is in pixel units of [0,1] inputs"
            )


@dataclass(frozen=True, kw_only=True)
class AttackSpec:
    name: str
    label: str = ""
    norms: tuple[str, ...] = ()  # empty: the attack must support whatever norm the battery uses
    params: dict[str, ParamValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"an attack needs a name (a string; see robustprune ls), got {escape(repr(self.name))}")
        if not isinstance(self.label, str):
            raise UsageError(f"attack {self.name!r}: label must be a string, got {escape(repr(self.label))}")
        if not isinstance(self.params, dict) or not all(
            isinstance(k, str) and isinstance(v, bool | int | float | str) for k, v in self.params.items()
        ):
            raise UsageError(f"attack {self.name!r}: settings must map names to numbers, strings or booleans")
        if not self.label:
            object.__setattr__(self, "label", self.name)
        for norm in self.norms:
            if norm not in NORMS:
                raise UsageError(f"attack {self.label!r}: unknown norm {norm!r} in norms; use {', '.join(NORMS)}")

    def applies_to(self, norm: str) -> bool:
        return not self.norms or norm in self.norms


@dataclass(frozen=True, kw_only=True)
class AuditSpec:
    """The reference attack run on a seeded sample of a battery's survivors on every run (the `[audit]` table).

    The first sample is `fraction` of the survivors (at least `min_size`); while a round finds an example the
    battery missed and fewer than `max_rounds` ran, the sample grows `grow`-fold.
    """

    attack: str = "autoattack"
    fraction: float = 0.02
    min_size: int = 2
    grow: float = 5.0
    max_rounds: int = 3
    params: dict[str, ParamValue] = field(default_factory=dict)  # settings of the audit attack

    def __post_init__(self) -> None:
        where = "[audit]"
        if not isinstance(self.attack, str) or not self.attack:
            raise UsageError(
                f"{where} attack must name an attack (see robustprune ls), got {escape(repr(self.attack))}"
            )
        checks = (
            ("fraction", (int, float), lambda v: 0 < v <= 1, "in (0, 1]"),
            ("min_size", (int,), lambda v: v >= 1, ">= 1"),
            ("grow", (int, float), lambda v: 1 <= v <= 1000, "in [1, 1000]"),
            ("max_rounds", (int,), lambda v: 1 <= v <= 100, "in [1, 100]"),
        )
        for key, types, ok, what in checks:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, types) or not math.isfinite(value) or not ok(value):
                raise UsageError(f"{where} {key} must be a number {what}, got {escape(repr(value))}")
        self.attack_spec()  # the attack's settings are checked as any attack's are

    def attack_spec(self, label: str = "audit") -> AttackSpec:
        """The audit attack as an attack of a battery, under `label`."""
        return AttackSpec(name=self.attack, label=label, params=self.params)

    def first_size(self, survivors: int) -> int:
        return min(survivors, max(self.min_size, math.ceil(self.fraction * survivors)))

    def next_size(self, size: int, survivors: int) -> int:
        return min(survivors, max(size + 1, math.ceil(size * self.grow)))


# The eps curve's defaults, one place for the battery table, `score(eps_grid=...)` and min_norm_curve.
EPS_CURVE_ATTACKS: tuple[str, ...] = ("fmn", "fab")
EPS_CURVE_STEPS = 100


@dataclass(frozen=True, kw_only=True)
class EpsCurveSpec:
    """The optional `[eps_curve]` table: robust accuracy at every eps of `grid` from minimum-norm attacks run once
    (robustprune.scoring.eps_curve), beside the battery's fixed-eps headline. `--eps-grid` replaces the grid."""

    grid: tuple[float, ...]
    attacks: tuple[str, ...] = EPS_CURVE_ATTACKS
    steps: int = EPS_CURVE_STEPS

    def __post_init__(self) -> None:
        grid = self.grid
        grid = parse_eps_grid(grid) if isinstance(grid, str) else check_eps_grid(list(grid))
        object.__setattr__(self, "grid", tuple(grid))
        attacks = self.attacks
        if isinstance(attacks, str) or not all(isinstance(a, str) and a for a in attacks) or not attacks:
            raise UsageError(
                f'[eps_curve] attacks must be a list of attack names such as ["fmn", "fab"], got {attacks!r}'
            )
        if len(set(attacks)) != len(attacks):
            raise UsageError(f"[eps_curve] attacks lists one attack twice: {list(attacks)!r}")
        object.__setattr__(self, "attacks", tuple(attacks))
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100_000:
            raise UsageError(f"[eps_curve] steps must be an integer in [1, 100000], got {steps!r}")


@dataclass(frozen=True, kw_only=True)
class BatterySpec:
    name: str
    threat: ThreatModel
    attacks: tuple[AttackSpec, ...]
    description: str = ""
    source: str = ""
    audit: AuditSpec | None = None
    eps_curve: EpsCurveSpec | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"a battery needs a name (a string), got {escape(repr(self.name))}")
        if not self.attacks:
            raise UsageError(f"battery {self.name!r} lists no attacks; add at least one [[attack]] table")
        labels = [a.label for a in self.attacks]
        duplicates = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
        if duplicates:
            raise UsageError(
                f"battery {self.name!r}: attack label {duplicates[0]!r} is used twice; give each a unique label"
            )

    def active_attacks(self) -> tuple[AttackSpec, ...]:
        return tuple(a for a in self.attacks if a.applies_to(self.threat.norm))

    def with_attack(self, attack: AttackSpec, *, first: bool) -> tuple[BatterySpec, AttackSpec]:
        """This battery plus `attack` (first or last), relabelled if needed so it never collides with a label."""
        labels = {a.label for a in self.attacks}
        label, n = attack.label, 1
        while label in labels:
            label, n = f"{attack.label}_{n}", n + 1
        added = replace(attack, label=label)
        attacks = (added, *self.attacks) if first else (*self.attacks, added)
        return replace(self, attacks=attacks), added

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["attacks"] = [asdict(a) | {"norms": list(a.norms)} for a in self.attacks]
        for optional in ("audit", "eps_curve"):
            if data[optional] is None:
                del data[optional]
        if self.eps_curve is not None:
            data["eps_curve"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["eps_curve"].items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatterySpec:
        """Inverse of to_dict: a resolved battery travels with results and sweep cells."""
        attacks = tuple(
            AttackSpec(
                name=a["name"],
                label=a.get("label", ""),
                norms=tuple(a.get("norms", ())),
                params=dict(a.get("params", {})),
            )
            for a in data["attacks"]
        )
        return cls(
            name=data["name"],
            threat=ThreatModel(**data["threat"]),
            attacks=attacks,
            description=data.get("description", ""),
            source=data.get("source", ""),
            audit=AuditSpec(**data["audit"]) if data.get("audit") else None,
            eps_curve=EpsCurveSpec(**data["eps_curve"]) if data.get("eps_curve") else None,
        )


_BATTERY_KEYS = {"name", "description", "norm", "eps", "attack", "audit", "eps_curve"}
_EPS_CURVE_KEYS = {"grid", "attacks", "steps"}
_AUDIT_KEYS = {"attack", "fraction", "min_size", "grow", "max_rounds"}
_ATTACK_KEYS = {"name", "label", "norms"}


def battery_dirs() -> list[Path]:
    return spec_dirs("ROBUSTPRUNE_BATTERIES", "attacks")


def find_battery(spec: str) -> Path:
    return find_spec_file("battery", spec, battery_dirs())


def read_battery(spec: str, *, norm: str | None = None, eps: float | None = None) -> BatterySpec:
    """Parse a battery file by name or path (keys, types, threat model); `norm` and `eps` override the file's
    threat model. `robustprune.attacks.load_battery` also resolves every attack against the registry."""
    path = find_battery(spec)
    data = read_toml(path, "battery file")
    where = escape(path)
    reject_unknown(data, _BATTERY_KEYS, where)
    for key in ("name", "description", "norm"):
        if key in data and not isinstance(data[key], str):
            raise UsageError(f"{where}: {key} must be a string, got {escape(repr(data[key]))}")
    tables = data.get("attack", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise UsageError(f"{where}: 'attack' must be an array of tables ([[attack]] with name = ...)")
    attacks = []
    for i, table in enumerate(tables):
        if not isinstance(table.get("name"), str) or not table["name"]:
            raise UsageError(f'{where}: attack #{i + 1} needs name = "<attack>" (a string; see robustprune ls)')
        name = table["name"]
        check_import_allowed(name, where)
        if not isinstance(table.get("label", ""), str):
            raise UsageError(f"{where}: attack {name!r} label must be a string, got {escape(repr(table['label']))}")
        norms = table.get("norms", [])
        if not isinstance(norms, list) or not all(isinstance(n, str) for n in norms):
            raise UsageError(f'{where}: attack {name!r} norms must be a list of strings such as ["Linf"]')
        params = {k: v for k, v in table.items() if k not in _ATTACK_KEYS}
        for key, value in params.items():
            if not isinstance(value, (bool, int, float, str)):
                raise UsageError(f"{where}: attack {name!r} key {key!r} must be a number, string or bool")
        attacks.append(AttackSpec(name=name, label=table.get("label", ""), norms=tuple(norms), params=params))
    threat_norm = norm if norm is not None else data.get("norm", "Linf")
    threat_eps = eps if eps is not None else data.get("eps")
    if threat_eps is None:
        raise UsageError(f"{where} sets no eps: pass --eps")
    return BatterySpec(
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        threat=ThreatModel(norm=threat_norm, eps=threat_eps),
        attacks=tuple(attacks),
        source=spec_source(path),
        audit=_read_audit(data.get("audit"), where),
        eps_curve=_read_eps_curve(data.get("eps_curve"), where),
    )


def _read_eps_curve(table: Any, where: str) -> EpsCurveSpec | None:
    """The optional [eps_curve] table: grid = "0:0.3:16" (or a list), attacks = ["fmn", "fab"], steps = 100."""
    if table is None:
        return None
    if not isinstance(table, dict) or "grid" not in table:
        raise UsageError(f'{where}: [eps_curve] needs grid = "start:stop:points" (e.g. "0:0.3:16") or a list of eps')
    reject_unknown(table, _EPS_CURVE_KEYS, f"{where} [eps_curve]")
    given = dict(table)
    if "attacks" in given:
        if not isinstance(given["attacks"], list):
            raise UsageError(
                f'{where}: [eps_curve] attacks must be a list such as ["fmn", "fab"], got {given["attacks"]!r}'
            )
        given["attacks"] = tuple(given["attacks"])
    try:
        return EpsCurveSpec(**given)
    except UsageError as exc:
        raise UsageError(f"{where}: {str(exc).replace('--eps-grid', 'grid')}") from None


def _read_audit(table: Any, where: str) -> AuditSpec | None:
    """The optional [audit] table: its own keys, and any other key is a setting of the audit attack."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise UsageError(f"{where}: 'audit' must be a table ([audit] with attack = ...)")
    known = {k: v for k, v in table.items() if k in _AUDIT_KEYS}
    params = {k: v for k, v in table.items() if k not in _AUDIT_KEYS}
    for key, value in params.items():
        if not isinstance(value, (bool, int, float, str)):
            raise UsageError(f"{where}: [audit] key {key!r} must be a number, string or bool")
    if isinstance(known.get("attack"), str):
        check_import_allowed(known["attack"], where, "[audit] attack")
    try:
        return AuditSpec(**known, params=params)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
