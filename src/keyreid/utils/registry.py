"""One registry per kind of thing (datasets, heads, losses, pose estimators): a config names a
component, and users add their own with a decorator without editing keyreid."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable

from keyreid.errors import KeyreidError


class UnknownNameError(KeyreidError, KeyError, ValueError):
    """A name no registry (or fixed list) knows: a user mistake, with the known names in the
    message. Still a KeyError / ValueError for callers that caught those before."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry:
    """Name -> factory. `builtin` modules are imported on first look-up (they register themselves)."""

    def __init__(self, kind: str, builtin: Iterable[str] = ()):
        self.kind = kind
        self._builtin = tuple(builtin)
        self._loaded = not self._builtin
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str):
        """Class or function decorator registering `name`."""

        def wrap(fn):
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = fn
            return fn

        return wrap

    def _load_builtin(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtin:
                importlib.import_module(module)

    def get(self, name: str) -> Callable[..., Any]:
        self._load_builtin()
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}")
        return self._items[name]

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        self._load_builtin()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load_builtin()
        return name in self._items
