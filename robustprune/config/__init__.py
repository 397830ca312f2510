"""Typed specs read from TOML or built in Python, validated the same way: threat models and batteries, sweeps,
the one typed-setting check, the lookup of declarative files, and the keys that name runs by their configuration.
"""

from robustprune.config.battery import (
    MAX_EPS,
    NORMS,
    AttackSpec,
    AuditSpec,
    BatterySpec,
    Norm,
    ThreatModel,
    battery_dirs,
    find_battery,
    read_battery,
)
from robustprune.config.certify import AUTO_MAX_RELUS, CERTIFY_METHODS, CertifySpec
from robustprune.config.files import (
    BUILTIN_DIR,
    BUILTIN_PREFIX,
    MAX_TOML_BYTES,
    allowing_imports,
    allowing_long,
    find_spec_file,
    given_spec_dirs,
    long_allowed,
    read_toml,
    reject_unknown,
    spec_dirs,
    spec_names,
    spec_source,
    user_spec_dirs,
)
from robustprune.config.keys import canonical_key
from robustprune.config.settings import ParamValue, check_fields, coerce_setting
from robustprune.config.sweep import SweepSpec, read_sweep_toml, sweep_spec_from_dict

__all__ = [
    "AUTO_MAX_RELUS",
    "BUILTIN_DIR",
    "BUILTIN_PREFIX",
    "CERTIFY_METHODS",
    "MAX_EPS",
    "MAX_TOML_BYTES",
    "NORMS",
    "AttackSpec",
    "AuditSpec",
    "BatterySpec",
    "CertifySpec",
    "Norm",
    "ParamValue",
    "SweepSpec",
    "ThreatModel",
    "allowing_imports",
    "allowing_long",
    "battery_dirs",
    "canonical_key",
    "check_fields",
    "coerce_setting",
    "find_battery",
    "find_spec_file",
    "given_spec_dirs",
    "long_allowed",
    "read_battery",
    "read_sweep_toml",
    "read_toml",
    "reject_unknown",
    "spec_dirs",
    "spec_names",
    "spec_source",
    "sweep_spec_from_dict",
    "user_spec_dirs",
]
