"""Declarative files (batteries, recipes, sweeps): where names are looked up and how TOML is read."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from robustprune.errors import UsageError
from robustprune.validation import check_input_file, escape, read_input_text

MAX_TOML_BYTES = 1 << 20  # batteries, recipes and sweep files are a few hundred bytes


def read_toml(path: Path, what: str = "file") -> dict[str, Any]:
    """A TOML file as a dict; not found, not a regular file, not UTF-8 or not TOML are one-line errors."""
    text = read_input_text(path, what, max_bytes=MAX_TOML_BYTES)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{escape(path)} is not valid TOML: {exc}") from None


def reject_unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(allowed))}")


def spec_dirs(env_var: str, folder: str) -> list[Path]:
    """Where names of declarative files are looked up: $<env_var> (os.pathsep-separated), ./<folder>, then the
    repository's <folder>/."""
    dirs = [Path(p) for p in os.environ.get(env_var, "").split(os.pathsep) if p]
    dirs += [Path.cwd() / folder, Path(__file__).resolve().parents[2] / folder]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def find_spec_file(kind: str, spec: str, dirs: list[Path]) -> Path:
    """A path (`*.toml` or containing a separator) as given, else `<spec>.toml` in the first of `dirs` holding it."""
    if not isinstance(spec, str) or not spec:
        raise UsageError(f"the {kind} must be a name or a .toml path, got {escape(repr(spec))}")
    if spec.endswith(".toml") or os.sep in spec:
        return check_input_file(spec, f"{kind} file", max_bytes=MAX_TOML_BYTES)
    for directory in dirs:
        if (directory / f"{spec}.toml").is_file():
            return directory / f"{spec}.toml"
    known = sorted({p.stem for d in dirs for p in d.glob("*.toml")})
    raise UsageError(
        f"unknown {kind} {escape(repr(spec))}: use one of {', '.join(known) or '(none found)'} or a .toml file"
    )
