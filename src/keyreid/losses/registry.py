"""Loss registry: a config names a loss, users add their own without editing ours."""

from __future__ import annotations

from typing import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str):
    """Class or function decorator: make a loss buildable by name."""

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return wrap


def loss_names() -> list[str]:
    return sorted(_REGISTRY)


def build_loss(name: str, **kwargs) -> nn.Module:
    """Build the loss registered as `name`; keyword arguments go to its constructor."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown loss {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)
