"""Train/eval mode bookkeeping shared by scoring, attacking and measuring.

`model.eval()` followed by `model.train(was_training)` is not a restore: it overwrites every submodule's flag
with the root's. A model handed over with, say, one BatchNorm left in train mode would come back changed. These
helpers save and restore each module's own flag.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import torch
from torch import nn

# Set by build_model (for a user's factory) and load_checkpoint (for a whole pickled or scripted module): the
# modules that came back in train mode, before the model was switched to eval mode, so that scoring can still say
# the model was handed over in train mode (S3). The registry's own factories are fresh constructions whose mode
# (nn.Module's default, train) states nothing, so they are not recorded.
HANDED_IN_TRAIN_MODE = "robustprune_train_mode_modules"


def train_mode_modules(model: nn.Module) -> list[str]:
    """Names of the modules currently in train mode ("<model>" for the root)."""
    return [name or "<model>" for name, m in model.named_modules() if m.training]


def remember_train_mode(model: nn.Module) -> None:
    """Record which modules are in train mode now (call before switching a freshly built model to eval)."""
    names = sorted(set(train_mode_modules(model)) | set(getattr(model, HANDED_IN_TRAIN_MODE, ())))
    with contextlib.suppress(AttributeError, RuntimeError):  # ScriptModules refuse new attributes
        setattr(model, HANDED_IN_TRAIN_MODE, names)


def handed_in_train_mode(model: nn.Module) -> list[str]:
    """Modules in train mode now or when the model was built or loaded (see `remember_train_mode`)."""
    recorded = list(getattr(model, HANDED_IN_TRAIN_MODE, ()) or ())
    return sorted(set(recorded) | set(train_mode_modules(model)), key=lambda n: (n != "<model>", n))


def set_eval(model: nn.Module) -> nn.Module:
    """`model.eval()`, tolerating modules that refuse it (torch.export modules run in their exported mode)."""
    try:
        model.eval()
    except NotImplementedError:
        pass
    return model


_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.AlphaDropout)


def mode_dependent(module: nn.Module) -> bool:
    """Whether the module computes differently in train mode: BatchNorm, Dropout, a tracking InstanceNorm, or
    code outside torch.nn whose forward reads `self.training` (an unreadable forward counts as dependent)."""
    if isinstance(module, _MODE_DEPENDENT):
        return True
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return bool(module.track_running_stats)
    if isinstance(module, torch.jit.ScriptModule):
        return True  # compiled code: its forward cannot be read, so assume it may branch on the mode
    forward = type(module).forward
    if getattr(forward, "__module__", "").startswith("torch."):
        return False
    try:
        source = inspect.getsource(forward)
    except (OSError, TypeError):
        return True
    return "training" in source


def mode_matters(model: nn.Module, train_modules: list[str]) -> bool:
    """Whether any of the named modules (found in train mode) would compute differently in train mode.

    Decided from the code, not by running the model in train mode (which would move BatchNorm statistics)."""
    wanted = set(train_modules)
    return any(mode_dependent(m) for name, m in model.named_modules() if (name or "<model>") in wanted)


@contextlib.contextmanager
def eval_mode(model: nn.Module, *, freeze_parameters: bool = False, no_grad: bool = False) -> Iterator[nn.Module]:
    """Every module in eval mode inside the block; each module's own flag (and requires_grad) restored after.

    `freeze_parameters` turns off parameter gradients (attacks need input gradients only); `no_grad` disables
    autograd altogether (measuring forwards).
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()] if freeze_parameters else []
    set_eval(model)
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield model
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        for m, flag in modes:
            m.training = flag
