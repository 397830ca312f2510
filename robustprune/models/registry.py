"""The model registry and `build_model`, which accepts a registry name or an import path `package.module:factory`."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from torch import nn

from robustprune.boundary import call_user, import_user_module
from robustprune.errors import UsageError
from robustprune.models.modes import remember_train_mode, set_eval
from robustprune.registry import Registry

Factory = Callable[..., nn.Module]
MODELS: Registry[Factory] = Registry("model")

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def resolve_factory(name: str) -> Factory:
    """Look `name` up in MODELS, or import it when it has the form package.module:factory."""
    if ":" not in name:
        try:
            return MODELS.get(name)
        except UsageError as err:
            raise UsageError(f"{err}; or name your own factory as package.module:factory") from None
    if not _IMPORT_PATH.match(name):
        raise UsageError(f"--model needs the form package.module:factory, got {name!r}")
    module_name, attr = name.split(":")
    module = import_user_module(module_name, f"--model {name}")
    if not hasattr(module, attr):
        raise UsageError(f"{module_name} has no attribute {attr!r} (from --model {name}); check the factory name")
    factory = getattr(module, attr)
    if not (inspect.isfunction(factory) or inspect.isclass(factory) or inspect.ismethod(factory)):
        # Builtins (os:execv, os:system) pass a signature check and are never model factories.
        raise UsageError(
            f"{module_name}.{attr} is a {type(factory).__name__}, not a factory (a Python function or nn.Module "
            f"class; --model {name})"
        )
    return factory


STANDARD_ARGUMENTS = ("num_classes", "input_shape", "mean", "std")


def factory_arguments(
    factory: Factory, name: str, num_classes: int, input_shape: tuple[int, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """How to call `factory`: with only the arguments its signature accepts, by name (`num_classes`, `input_shape`,
    `mean`, `std`, and the options given), so `def cnn(): ...`, `resnet18(num_classes=10)` and an nn.Module class
    all work. A factory that names none of the standard arguments but takes two positional ones gets
    (num_classes, input_shape) positionally, as before. An option the factory cannot take is an error; mean and std
    left at None are simply not passed."""
    offered = {"num_classes": num_classes, "input_shape": input_shape, **kwargs}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no introspectable signature (C callables): the documented positional form
        return (num_classes, input_shape), dict(kwargs)
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    args: tuple[Any, ...] = ()
    required = [p for p in positional[:2] if p.default is inspect.Parameter.empty]
    if not named & {"num_classes", "input_shape"} and len(required) == 2:
        args = (num_classes, input_shape)  # e.g. def make(n, shape): the positional convention
        taken = {positional[0].name, positional[1].name}
        offered = {k: v for k, v in kwargs.items() if k not in taken}
    call = {}
    for key, value in offered.items():
        if key in named or var_keyword:
            call[key] = value
        elif (key in STANDARD_ARGUMENTS and key not in kwargs) or value is None:
            continue  # num_classes / input_shape / an unset mean or std the factory does not ask for
        else:
            raise UsageError(
                f"--model {name} does not take the argument {key!r}; it takes ({', '.join(params) or 'no arguments'})"
            )
    try:
        inspect.signature(factory).bind(*args, **call)
    except TypeError as err:
        raise UsageError(
            f"--model {name} cannot be called with {', '.join(call) or 'no arguments'} ({err}); a factory takes "
            "any of num_classes, input_shape, mean, std and its own options (--model-arg key=value)"
        ) from None
    return args, call


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int], /, **kwargs: Any) -> nn.Module:
    """Build a model from a registry name or import path; returned in eval mode, logits out, Normalize first.

    kwargs (mean, std, and architecture options such as vgg11's width) are passed to the factory as given.
    """
    if not isinstance(name, str) or not name:
        raise UsageError(f"--model needs a registry name ({', '.join(MODELS.names())}) or package.module:factory")
    factory = resolve_factory(name)
    input_shape = tuple(input_shape)  # type: ignore[assignment]
    args, call_kwargs = factory_arguments(factory, name, num_classes, input_shape, kwargs)
    model = call_user(
        factory, *args, who=f"the model factory --model {name}", unusable=True, fix="fix the factory", **call_kwargs
    )
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {name} returned a {type(model).__name__}, not a torch.nn.Module; fix the factory")
    try:  # recorded so checkpoint errors can name the architecture the user asked for
        model.robustprune_model = name
    except (AttributeError, RuntimeError):  # e.g. a ScriptModule refuses new attributes; the name is cosmetic
        pass
    if ":" in name:  # a user's factory: its mode is the user's statement, reported by scoring (S3)
        remember_train_mode(model)
    return set_eval(model)
