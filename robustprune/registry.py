"""One generic name -> object registry, used for models, attacks, defenses and pruning criteria."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from robustprune.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of components; unknown names fail with near matches and the full list."""

    def __init__(self, kind: str, resolver: Callable[[str], T] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        # Names of the form `package.module:Name` that are not registered go to `resolver` (imported on demand,
        # cached apart from the registered names, which `names()` lists).
        self.resolver = resolver
        self._resolved: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def register_named(self, name: str) -> Callable[[T], T]:
        """Register a class and set its `name` attribute to the registry key (one spelling everywhere)."""

        def decorator(cls: T) -> T:
            cls.name = name  # type: ignore[attr-defined]
            self.add(name, cls)
            return cls

        return decorator

    def register_instance(self, name: str) -> Callable[[type], type]:
        """Register an instance of the decorated class (built with no arguments) and set the class's `name`."""

        def decorator(cls: type) -> type:
            cls.name = name  # type: ignore[attr-defined]
            self.add(name, cls())
            return cls

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        if name not in self._items and self.resolver is not None and isinstance(name, str) and ":" in name:
            if name not in self._resolved:
                self._resolved[name] = self.resolver(name)
            return self._resolved[name]
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(f"unknown {self.kind} {name!r}{hint}; known: {', '.join(sorted(self._items))}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
