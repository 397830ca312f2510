"""Typed specs read from TOML: threat models and batteries. Unknown keys are errors that name file and key."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from robustprune.errors import UsageError

Norm = Literal["Linf", "L2"]
NORMS: tuple[str, ...] = ("Linf", "L2")
ParamValue = bool | int | float | str

# Above these an eps is not a threat model but a typo: Linf 1.0 already reaches every image in [0,1].
MAX_EPS = {"Linf": 1.0, "L2": 1000.0}


def canonical_key(obj: Any, length: int = 16) -> str:
    """sha256 over canonical JSON (sorted keys, no whitespace), kept to `length` hex characters."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True, kw_only=True)
class ThreatModel:
    norm: Norm
    eps: float

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise UsageError(f"unknown norm {self.norm!r}: use one of {', '.join(NORMS)}")
        eps = self.eps
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
        if not self.label:
            object.__setattr__(self, "label", self.name)
        for norm in self.norms:
            if norm not in NORMS:
                raise UsageError(f"attack {self.label!r}: unknown norm {norm!r} in norms; use {', '.join(NORMS)}")

    def applies_to(self, norm: str) -> bool:
        return not self.norms or norm in self.norms


@dataclass(frozen=True, kw_only=True)
class BatterySpec:
    name: str
    threat: ThreatModel
    attacks: tuple[AttackSpec, ...]
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
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
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatterySpec:
        """Inverse of to_dict: a resolved battery travels with results and sweep cells."""
        attacks = tuple(
            AttackSpec(name=a["name"], label=a["label"], norms=tuple(a["norms"]), params=dict(a["params"]))
            for a in data["attacks"]
        )
        return cls(
            name=data["name"],
            threat=ThreatModel(**data["threat"]),
            attacks=attacks,
            description=data.get("description", ""),
            source=data.get("source", ""),
        )


def coerce_setting(value: ParamValue, default: ParamValue, where: str) -> ParamValue:
    """Check `value` against the type of its default; ints are accepted where floats are expected."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{where} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise UsageError(f"{where} must be a string, got {value!r}")
    return value


_BATTERY_KEYS = {"name", "description", "norm", "eps", "attack"}
_ATTACK_KEYS = {"name", "label", "norms"}


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None


def _reject_unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(allowed))}")


def spec_dirs(env_var: str, folder: str) -> list[Path]:
    """Where names of declarative files are looked up: $<env_var> (os.pathsep-separated), ./<folder>, then the
    repository's <folder>/."""
    dirs = [Path(p) for p in os.environ.get(env_var, "").split(os.pathsep) if p]
    dirs += [Path.cwd() / folder, Path(__file__).resolve().parents[1] / folder]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def find_spec_file(kind: str, spec: str, dirs: list[Path]) -> Path:
    """A path (`*.toml` or containing a separator) as given, else `<spec>.toml` in the first of `dirs` holding it."""
    if spec.endswith(".toml") or os.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"{kind} file {spec} not found")
        return path
    for directory in dirs:
        if (directory / f"{spec}.toml").is_file():
            return directory / f"{spec}.toml"
    known = sorted({p.stem for d in dirs for p in d.glob("*.toml")})
    raise UsageError(f"unknown {kind} {spec!r}: use one of {', '.join(known) or '(none found)'} or a .toml file")


def battery_dirs() -> list[Path]:
    return spec_dirs("ROBUSTPRUNE_BATTERIES", "attacks")


def find_battery(spec: str) -> Path:
    return find_spec_file("battery", spec, battery_dirs())


def load_battery(spec: str, *, norm: str | None = None, eps: float | None = None) -> BatterySpec:
    """Read a battery by name or path; `norm` and `eps` override the file's threat model."""
    path = find_battery(spec)
    data = read_toml(path)
    where = str(path)
    _reject_unknown(data, _BATTERY_KEYS, where)
    tables = data.get("attack", [])
    if not isinstance(tables, list):
        raise UsageError(f"{where}: 'attack' must be an array of tables ([[attack]])")
    attacks = []
    for i, table in enumerate(tables):
        if "name" not in table:
            raise UsageError(f"{where}: attack #{i + 1} has no 'name'")
        params = {k: v for k, v in table.items() if k not in _ATTACK_KEYS}
        for key, value in params.items():
            if not isinstance(value, (bool, int, float, str)):
                raise UsageError(f"{where}: attack {table['name']!r} key {key!r} must be a number, string or bool")
        attacks.append(
            AttackSpec(
                name=table["name"], label=table.get("label", ""), norms=tuple(table.get("norms", ())), params=params
            )
        )
    threat_norm = norm if norm is not None else data.get("norm", "Linf")
    threat_eps = eps if eps is not None else data.get("eps")
    if threat_eps is None:
        raise UsageError(f"{where} sets no eps: pass --eps")
    return BatterySpec(
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        threat=ThreatModel(norm=threat_norm, eps=threat_eps),
        attacks=tuple(attacks),
        source=str(path),
    )
