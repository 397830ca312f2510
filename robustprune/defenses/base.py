"""The defense contract and recipes.

A recipe (built-in: robustprune/builtin/defenses/*.toml; a user's: config/files.py) names a defense, an
architecture, the training settings, the defense's own settings and optionally a pruning plan. A defense turns
(model, data, target sparsity, parent) into a trained, possibly pruned model plus a training log, always through
the shared loop in train_loop.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from robustprune.config import (
    ParamValue,
    check_fields,
    coerce_setting,
    find_spec_file,
    read_toml,
    spec_dirs,
    spec_source,
)
from robustprune.data import Dataset
from robustprune.defenses.train_loop import TrainSpec
from robustprune.errors import UsageError
from robustprune.registry import Registry
from robustprune.sparsity import PRUNING_CRITERIA, SCHEDULES

DEFENSES: Registry[type[Defense]] = Registry("defense")


def register_defense(name: str) -> Callable[[type[Defense]], type[Defense]]:
    return DEFENSES.register_named(name)


REINIT_SCHEMES = ("sparse_kaiming", "default")


PRUNED_LAYERS = ("all", "conv")

REINIT_BUDGETS = ("epochs", "compute")  # Scratch-E: the dense run's epochs; Scratch-B: its compute (MACs x epochs)


@dataclass(frozen=True, kw_only=True)
class PruningSpec:
    """How a recipe reaches its target sparsity (see robustprune/sparsity/ for criteria and schedules, and
    robustprune/defenses/pruning_driver.py for how they are applied during training)."""

    criterion: str = "global_magnitude"  # a PRUNING_CRITERIA name
    schedule: str = "one_shot"  # one_shot | iterative | agp | one_cycle
    rounds: int = 3  # iterative: prune-then-train rounds
    start_fraction: float = 0.0  # agp: when pruning starts, as a fraction of training
    end_fraction: float = 0.75  # agp: when it reaches the target
    alpha: float = 14.0  # one_cycle
    beta: float = 6.0  # one_cycle
    interval: int = 0  # agp / one_cycle: optimizer steps between mask updates; 0 = auto (about 32 updates per run)
    exclude: tuple[str, ...] = ()  # module names never pruned
    layers: str = "all"  # all | conv: "conv" ranks Conv weights only (Linear layers never pruned, as Rethinking's code)
    reinit: bool = False  # the "Rethinking" scratch control: keep the mask, re-initialise the weights
    reinit_scheme: str = "sparse_kaiming"  # sparse_kaiming (the Rethinking code) | default (the architecture's init)
    reinit_budget: str = "epochs"  # epochs (Scratch-E) | compute (Scratch-B: epochs x dense MACs / pruned MACs)
    ap_share: float = 0.0  # Activating-while-Pruning: share of each round's alive weights removed by AP (0 = off)

    def __post_init__(self) -> None:
        check_fields(self, "[pruning]")
        PRUNING_CRITERIA.get(self.criterion)  # unknown names fail with the list of known ones
        SCHEDULES.get(self.schedule)
        if self.rounds < 1:
            raise UsageError(f"[pruning] rounds must be >= 1, got {self.rounds}")
        if not 0.0 <= self.start_fraction < self.end_fraction <= 1.0:
            raise UsageError(
                f"[pruning] needs 0 <= start_fraction < end_fraction <= 1, got {self.start_fraction} and "
                f"{self.end_fraction}"
            )
        if self.alpha <= 0:
            raise UsageError(f"[pruning] alpha must be > 0, got {self.alpha}")
        if self.interval < 0:
            raise UsageError(f"[pruning] interval must be >= 0 (0 = auto), got {self.interval}")
        if self.layers not in PRUNED_LAYERS:
            raise UsageError(f"[pruning] layers {self.layers!r} is not one of {', '.join(PRUNED_LAYERS)}")
        if self.reinit_scheme not in REINIT_SCHEMES:
            known = ", ".join(REINIT_SCHEMES)
            raise UsageError(f"[pruning] reinit_scheme {self.reinit_scheme!r} is not one of {known}")
        if self.reinit_budget not in REINIT_BUDGETS:
            known = ", ".join(REINIT_BUDGETS)
            raise UsageError(f"[pruning] reinit_budget {self.reinit_budget!r} is not one of {known}")
        if self.reinit_budget != "epochs" and not self.reinit:
            raise UsageError("[pruning] reinit_budget applies to the scratch control: set reinit = true as well")
        if not 0.0 <= self.ap_share < 1.0:
            raise UsageError(f"[pruning] ap_share must be in [0, 1) (0.02 in the AP paper), got {self.ap_share}")
        if self.ap_share and self.criterion.startswith("layerwise_"):
            # a per-layer re-ranking next round would revive AP's removals in layers AP pruned beyond the share
            raise UsageError("[pruning] ap_share needs a global criterion (global_magnitude or random)")
        if self.ap_share and (SCHEDULES.get(self.schedule).kind != "rounds" or self.reinit):
            raise UsageError(
                "[pruning] ap_share (Activating-while-Pruning) needs a schedule that prunes in rounds "
                '(schedule = "iterative") and no reinit'
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exclude"] = list(self.exclude)
        # Options at their defaults stay out, so the names (hashes) of existing runs do not change.
        for key, default in (("layers", "all"), ("reinit_budget", "epochs"), ("ap_share", 0.0)):
            if data[key] == default:
                del data[key]
        return data


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str
    defense: str
    architecture: str = "digits_cnn"
    description: str = ""
    paper_settings: str = ""  # what the papers used (e.g. for CIFAR-10), for the record
    needs_parent: bool = False
    train: TrainSpec = field(default_factory=TrainSpec)
    settings: dict[str, ParamValue] = field(default_factory=dict)
    pruning: PruningSpec | None = None
    source: str = ""  # the file that ran: builtin:<name> or an absolute path (config.spec_source)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["train"] = self.train.to_dict()  # options at their defaults left out, as the pruning table's
        if self.pruning is not None:
            data["pruning"] = self.pruning.to_dict()
        return data


@dataclass
class Artifact:
    """What a defense returns: the trained model (masks attached) and what goes into its manifest."""

    model: nn.Module
    log: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


class Defense(ABC):
    """Base class: subclasses declare `defaults` for their settings and implement `run`."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, ParamValue]] = {}
    # True for a defense robustprune reconstructed without the paper's full text or code (Deadwooding): the train
    # manifest, the sweep's cell records and every report mark its results as a reconstruction's.
    reconstruction: ClassVar[bool] = False

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.settings: dict[str, ParamValue] = dict(self.defaults)
        for key, value in recipe.settings.items():
            if key not in self.defaults:
                allowed = ", ".join(sorted(self.defaults)) or "none"
                raise UsageError(f"recipe {recipe.name!r}: unknown [settings] key {key!r}; allowed keys are {allowed}")
            self.settings[key] = coerce_setting(
                value, self.defaults[key], f"recipe {recipe.name!r} [settings] {key!r}", key
            )
        self.validate()

    def validate(self) -> None:
        """Hook for range checks on settings."""

    def build_model(self, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
        """The architecture this defense trains; DIO overrides it to add its heads."""
        from robustprune.models import build_model

        return build_model(self.recipe.architecture, num_classes, input_shape)

    @abstractmethod
    def run(
        self,
        model: nn.Module,
        train: Dataset,
        val: Dataset,
        *,
        sparsity: float,
        parent: nn.Module | None,
        seed: int,
        progress: bool = False,
    ) -> Artifact:
        """Train (and prune) `model` in place to `sparsity`; `parent` is the dense model when the recipe has one."""


_RECIPE_KEYS = {
    "name",
    "defense",
    "architecture",
    "description",
    "paper_settings",
    "needs_parent",
    "train",
    "pruning",
    "settings",
}


def recipe_dirs() -> list[Path]:
    return spec_dirs("ROBUSTPRUNE_RECIPES", "defenses")


def find_recipe(spec: str) -> Path:
    return find_spec_file("recipe", spec, recipe_dirs())


def _typed_section(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UsageError(f"{where} must be a table")
    fields = {f.name: f for f in cls.__dataclass_fields__.values()}
    defaults = cls()
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise UsageError(f"{where}: unknown key {key!r}; allowed keys are {', '.join(sorted(fields))}")
        default = getattr(defaults, key)
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise UsageError(f"{where} {key!r} must be a list of strings")
            values[key] = tuple(value)
        else:
            values[key] = coerce_setting(value, default, f"{where} {key!r}", key)
    try:
        return cls(**values)
    except UsageError as err:  # range checks in __post_init__ do not know the file
        raise UsageError(f"{where}: {err}") from None


def parse_override(text: str) -> tuple[list[str], ParamValue]:
    """`train.epochs=3` -> (["train", "epochs"], 3): the value is read as TOML, bare words as strings."""
    import tomllib

    if "=" not in text:
        raise UsageError(f"override {text!r} must look like section.key=value, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def load_recipe(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe by name or path, apply `section.key=value` overrides, and validate every key."""
    path = find_recipe(spec)
    data = read_toml(path)
    written = data.get("architecture")
    if isinstance(written, str) and ":" in written:
        # A recipe is data: a file (found in a --recipe-dir or $ROBUSTPRUNE_RECIPES, say) must never import code.
        raise UsageError(
            f"recipe {path}: architecture {written!r} is an import path, and a recipe file never imports code; use a "
            f"registry name (robustprune ls), or give the import path on the command line: --set architecture={written}"
        )
    for text in overrides:
        keys, value = parse_override(text)
        table = data
        for part in keys[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise UsageError(f"override {text!r}: {part!r} is not a table in the recipe")
        table[keys[-1]] = value
    where = f"recipe {path}"
    unknown = sorted(set(data) - _RECIPE_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(_RECIPE_KEYS))}")
    if "defense" not in data or not isinstance(data["defense"], str):
        raise UsageError(f'{where} must set defense = "<name>"')
    top = {
        "name": path.stem,
        "architecture": "digits_cnn",
        "description": "",
        "paper_settings": "",
        "needs_parent": False,
    }
    top = {key: coerce_setting(data.get(key, default), default, f"{where} {key!r}") for key, default in top.items()}
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise UsageError(f"{where} [settings] must be a table")
    recipe = Recipe(
        name=top["name"],
        defense=data["defense"],
        architecture=top["architecture"],
        description=top["description"],
        paper_settings=top["paper_settings"],
        needs_parent=top["needs_parent"],
        train=_typed_section(TrainSpec, data.get("train", {}), f"{where} [train]"),
        settings=dict(settings),
        pruning=_typed_section(PruningSpec, data["pruning"], f"{where} [pruning]") if "pruning" in data else None,
        source=spec_source(path),
    )
    DEFENSES.get(recipe.defense)(recipe)  # validates the [settings] table now, before anything runs
    return recipe
