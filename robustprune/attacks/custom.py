"""Attacks a battery file names without robustprune knowing them in advance:

- `torchattacks:MIFGSM` (any torchattacks class that takes `eps`): wrapped like the built-in torchattacks
  adapters; its keyword arguments are the entry's settings (defaults from its signature), eps comes from the
  threat model, and the norm from its name (`...L2` classes are L2, the others Linf);
- `package.module:Class`: a user's `robustprune.attacks.base.Attack` subclass, imported on demand.

Both run through the same engine as every registered attack: seeding, verification that each adversarial example
is inside the ball and the box and misclassified, pass counting and timing. Naming one in a battery file imports
code, as `--model package.module:factory` does; the result records the class (implementation, library, version).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from torch import nn

from robustprune.attacks.base import ATTACKS, Attack
from robustprune.attacks.torchattacks_adapter import TorchattacksAttack
from robustprune.boundary import import_user_module
from robustprune.errors import UsageError

_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def resolve_custom_attack(name: str) -> type[Attack]:
    """The Attack class for `torchattacks:Class` or `package.module:Class` (UsageError when it is neither)."""
    if not _PATH.match(name):
        raise UsageError(f"attack {name!r} must be a registered name (robustprune ls) or package.module:Class")
    module_name, attr = name.split(":")
    if module_name == "torchattacks":
        return _torchattacks_class(name, attr)
    module = import_user_module(module_name, f"attack {name}")
    found = getattr(module, attr, None)
    if not (inspect.isclass(found) and issubclass(found, Attack)) or inspect.isabstract(found):
        raise UsageError(
            f"attack {name} is not a robustprune Attack subclass (subclass robustprune.attacks.base.Attack and "
            "implement perturb_batch), or is abstract"
        )
    return type(found.__name__, (found,), {"name": name, "__module__": found.__module__, "known_settings": False})


def _torchattacks_class(name: str, class_name: str) -> type[Attack]:
    import torchattacks
    from torchattacks.attack import Attack as LibraryAttack

    found = getattr(torchattacks, class_name, None)
    if not (inspect.isclass(found) and issubclass(found, LibraryAttack)):
        raise UsageError(f"torchattacks has no attack class {class_name!r}")
    params = inspect.signature(found.__init__).parameters
    if "eps" not in params:
        raise UsageError(
            f"attack {name} takes no eps: robustprune scores a fixed-eps threat model (use a minimum-norm attack "
            "through its own adapter)"
        )
    # The class count is the data's, never a setting: APGDT's and FAB's default of 10 is wrong on other data.
    from_data = ("self", "model", "eps", "n_classes")
    defaults: dict[str, Any] = {
        key: p.default
        for key, p in params.items()
        if key not in from_data and isinstance(p.default, bool | int | float | str)
    }
    norms = ("L2",) if class_name.upper().endswith("L2") else ("Linf",)
    takes_classes = "n_classes" in params

    def build(self: TorchattacksAttack, model: nn.Module, seed: int) -> Any:
        extra = {"n_classes": self.num_classes} if takes_classes and self.num_classes else {}
        return found(model, eps=self.threat.eps, **self.settings, **extra)

    return type(
        f"Torchattacks{class_name}",
        (TorchattacksAttack,),
        {
            "name": name,
            "norms": norms,
            "defaults": defaults,
            "implementation": f"torchattacks.{class_name}",
            "build": build,
            "known_settings": False,
            "__module__": __name__,
        },
    )


ATTACKS.resolver = resolve_custom_attack
