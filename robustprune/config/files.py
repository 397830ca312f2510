"""Declarative files (batteries, recipes, sweeps): where names are looked up and how TOML is read."""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
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


BUILTIN_DIR = Path(__file__).resolve().parents[1] / "builtin"  # shipped in the wheel: builtin/attacks, builtin/defenses
BUILTIN_PREFIX = "builtin:"  # `builtin:quick` names the shipped file even when a user directory has its own quick

log = logging.getLogger("robustprune")

# Directories given on the command line (--battery-dir, --recipe-dir), by folder; see given_spec_dirs.
_GIVEN: dict[str, tuple[Path, ...]] = {}
_KINDS = {"attacks": "battery", "defenses": "recipe"}


@contextmanager
def given_spec_dirs(**dirs: Sequence[str | Path]) -> Iterator[None]:
    """Within the block, look names up in these directories first: `given_spec_dirs(attacks=[...],
    defenses=[...])`, keyed by the built-in folder they extend. Each must be an existing directory."""
    saved = dict(_GIVEN)
    try:
        for folder, paths in dirs.items():
            checked = []
            for path in paths:
                resolved = Path(path).expanduser().resolve()
                if not resolved.is_dir():
                    kind = _KINDS.get(folder, folder)
                    raise UsageError(f"{kind} directory {escape(path)} does not exist or is not a directory")
                checked.append(resolved)
            _GIVEN[folder] = tuple(checked)
        yield
    finally:
        _GIVEN.clear()
        _GIVEN.update(saved)


# Whether battery files may name attack classes by import path (`package.module:Class`): a file is data and, unless
# the command line (--allow-imports) or the Python API (allowing_imports()) says so, never makes robustprune import
# code. torchattacks classes (`torchattacks:Name`) are a library robustprune already imports, not user code.
# Whether a run may be long (a battery above the per-example pass cap, a sweep above the cell cap): --allow-long.
_PERMISSIONS: dict[str, bool] = {"imports": False, "long": False}
LIBRARY_PREFIXES = ("torchattacks:",)


@contextmanager
def _permitting(what: str, allowed: bool) -> Iterator[None]:
    saved = _PERMISSIONS[what]
    _PERMISSIONS[what] = allowed
    try:
        yield
    finally:
        _PERMISSIONS[what] = saved


def allowing_imports(allowed: bool = True) -> AbstractContextManager[None]:
    """Within the block, battery files may name attacks by import path (their modules are imported when resolved)."""
    return _permitting("imports", allowed)


def allowing_long(allowed: bool = True) -> AbstractContextManager[None]:
    """Within the block, batteries and sweeps above the documented size caps run (attacks/cost.py, sweep/plan.py)."""
    return _permitting("long", allowed)


def long_allowed() -> bool:
    return _PERMISSIONS["long"]


def check_import_allowed(name: str, where: str, what: str = "attack") -> None:
    """Refuse an import path named in a data file unless imports were allowed (see allowing_imports)."""
    if ":" not in name or name.startswith(LIBRARY_PREFIXES) or _PERMISSIONS["imports"]:
        return
    module = name.split(":", 1)[0]
    raise UsageError(
        f"{where}: {what} {escape(repr(name))} is an import path, and a battery file imports no code unless asked: "
        f"pass --allow-imports to import {escape(module)} (or build the BatterySpec in Python)"
    )


def user_spec_dirs(env_var: str, folder: str) -> list[Path]:
    """The user's directories, in lookup order: those given on the command line, then $<env_var>
    (os.pathsep-separated; entries that are not directories are skipped). Never the current directory."""
    dirs = list(_GIVEN.get(folder, ()))
    dirs += [Path(p).expanduser().resolve() for p in os.environ.get(env_var, "").split(os.pathsep) if p]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def spec_dirs(env_var: str, folder: str) -> list[Path]:
    """Where names of declarative files are looked up: the user's directories (user_spec_dirs), then the built-in
    <folder> shipped inside the package. A user file named like a built-in wins only because its directory was
    given explicitly; a warning says so and the result records the file that ran (spec_source)."""
    return [*user_spec_dirs(env_var, folder), BUILTIN_DIR / folder]


def spec_source(path: Path) -> str:
    """What results record as the file that ran: `builtin:<name>` for a shipped file, else its absolute path."""
    resolved = path.resolve()
    if resolved.parent.parent == BUILTIN_DIR:
        return f"{BUILTIN_PREFIX}{resolved.stem}"
    return str(resolved)


def find_spec_file(kind: str, spec: str, dirs: list[Path]) -> Path:
    """A path (`*.toml` or containing a separator) as given; `builtin:<name>` the shipped file of the built-in
    folder among `dirs`; else `<spec>.toml` in the first of `dirs` holding it."""
    if not isinstance(spec, str) or not spec:
        raise UsageError(f"the {kind} must be a name or a .toml path, got {escape(repr(spec))}")
    builtin = [d for d in dirs if d.parent == BUILTIN_DIR]
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX) :]
        for directory in builtin:
            if name and "/" not in name and os.sep not in name and (directory / f"{name}.toml").is_file():
                return directory / f"{name}.toml"
        known = sorted(f"{BUILTIN_PREFIX}{p.stem}" for d in builtin for p in d.glob("*.toml"))
        raise UsageError(f"unknown built-in {kind} {escape(repr(spec))}: use one of {', '.join(known) or '(none)'}")
    if spec.endswith(".toml") or os.sep in spec or (os.altsep and os.altsep in spec):
        return check_input_file(spec, f"{kind} file", max_bytes=MAX_TOML_BYTES)
    for directory in dirs:
        if (directory / f"{spec}.toml").is_file():
            found = directory / f"{spec}.toml"
            shadowed = [d / f"{spec}.toml" for d in builtin if d != directory and (d / f"{spec}.toml").is_file()]
            if shadowed:
                log.warning(
                    "%s %r: using %s from a user directory, not the built-in one (builtin:%s names that)",
                    kind,
                    spec,
                    escape(found),
                    spec,
                )
            return found
    known = sorted({p.stem for d in dirs for p in d.glob("*.toml")})
    raise UsageError(
        f"unknown {kind} {escape(repr(spec))}: use one of {', '.join(known) or '(none found)'} or a .toml file"
    )


def spec_names(dirs: list[Path]) -> dict[str, Path]:
    """Every name `find_spec_file` resolves in `dirs`, with the file it resolves to (the first directory wins)."""
    names: dict[str, Path] = {}
    for directory in dirs:
        for path in sorted(directory.glob("*.toml")):
            names.setdefault(path.stem, path)
    return dict(sorted(names.items()))
