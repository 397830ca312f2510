"""The sweep spec: recipes x target sparsities x seeds and everything every cell shares, from flags or a TOML
file (keys as the `sweep` options), validated the same way from both and from Python."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from robustprune.config.eps import parse_eps
from robustprune.config.files import read_toml
from robustprune.devices import check_device_spec
from robustprune.errors import UsageError
from robustprune.validation import check_float, check_int, check_seed, escape


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    recipes: tuple[str, ...]
    sparsities: tuple[float, ...] = (0.0,)
    seeds: tuple[int, ...] = (0,)
    dataset: str = "digits"
    battery: str = "fast"
    head_battery: str | None = None  # multi-head (DIO) models: battery for the per-head report (default: battery)
    norm: str | None = None
    eps: float | None = None
    n: int | None = None
    epochs: int | None = None  # overrides every recipe's train.epochs when set
    batch_size: int = 256
    threads: int = 1  # per worker; fixed so that every executor computes the same numbers
    parent_recipe: str = "dense"
    # where every cell trains and scores (robustprune.devices); not part of the cell key, so results computed on
    # different devices compare (they can differ by floating-point rounding: the provenance records the device)
    device: str = "auto"
    # also record robust accuracy at these eps from one minimum-norm run per cell (upper bounds; scoring/eps_curve.py; the grid rules are config/eps.py)
    eps_grid: tuple[float, ...] | None = None
    # the bracket beside each cell's attacks (config/certify.py): a method name or a table; None: the score's default
    certify: Any = None

    def __post_init__(self) -> None:
        """Types, finiteness and bounds of every field, the same from flags, a TOML file or Python."""
        for key in ("recipes", "sparsities", "seeds"):
            value = getattr(self, key)
            if not isinstance(value, list | tuple):
                raise UsageError(f"the sweep's {key} must be a list, got {escape(repr(value))}")
            object.__setattr__(self, key, tuple(value))
        if not self.recipes or not all(isinstance(r, str) and r for r in self.recipes):
            raise UsageError(f'the sweep needs recipes as names, e.g. ["dense", "magnitude"]; got {self.recipes!r}')
        if not self.seeds:
            raise UsageError("the sweep lists no seeds: pass --seeds 0,1")
        if not self.sparsities:
            raise UsageError("the sweep lists no sparsities: pass --sparsities 0,0.5,0.9")
        for seed in self.seeds:
            check_seed(seed, "sweep seed")
        for sparsity in self.sparsities:
            if not 0 <= check_float(sparsity, "sweep sparsity") < 1:
                raise UsageError(f"sparsity {sparsity} is impossible: use values in [0, 1)")
        for key in ("dataset", "battery", "parent_recipe"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise UsageError(f"the sweep's {key} must be a name or path, got {escape(repr(getattr(self, key)))}")
        for key in ("head_battery", "norm"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise UsageError(f"the sweep's {key} must be a string, got {escape(repr(getattr(self, key)))}")
        if isinstance(self.eps, str):  # "8/255" in a sweep file
            object.__setattr__(self, "eps", parse_eps(self.eps, "the sweep's eps"))
        if self.eps is not None:
            check_float(self.eps, "the sweep's eps")
        if self.n is not None:
            check_int(self.n, "the sweep's n", lo=1)
        if self.epochs is not None:
            check_int(self.epochs, "the sweep's epochs", bound="epochs")
        check_int(self.batch_size, "the sweep's batch_size", bound="batch_size")
        check_int(self.threads, "the sweep's threads", bound="threads")
        object.__setattr__(self, "device", check_device_spec(self.device, "the sweep's device"))
        if self.eps_grid is not None:
            from robustprune.config.eps import check_eps_grid, parse_eps_grid

            grid = parse_eps_grid(self.eps_grid) if isinstance(self.eps_grid, str) else check_eps_grid(self.eps_grid)
            object.__setattr__(self, "eps_grid", tuple(grid))
        if self.certify is not None:
            from robustprune.config.certify import CertifySpec

            object.__setattr__(self, "certify", CertifySpec.coerce(self.certify).to_dict())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("eps_grid", "certify"):  # absent unless asked for: older sweep files read and write unchanged
            if data[key] is None:
                del data[key]
        return data


def read_sweep_toml(path: str | Path) -> dict[str, Any]:
    data = read_toml(Path(path), "sweep file")
    allowed = set(SweepSpec.__dataclass_fields__)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(allowed))}")
    for key in ("recipes", "sparsities", "seeds"):
        if key in data and not isinstance(data[key], list):
            raise UsageError(f"{escape(path)}: {key} must be a list, e.g. {key} = [...]")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def sweep_spec_from_dict(data: dict[str, Any]) -> SweepSpec:
    """A stored spec (a sweep's results.json or sweep.json) back as a SweepSpec; keys of other versions are ignored."""
    known = {f.name for f in fields(SweepSpec)}
    return SweepSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})
