"""Heads, one module each, built by name: bnneck, kae, aacn, pabr."""

from __future__ import annotations

import importlib
from typing import Callable

import torch.nn as nn

_HEADS: dict[str, Callable[..., nn.Module]] = {}
_BUILTIN = ("bnneck", "kae", "aacn", "pabr")


def register_head(name: str):
    def wrap(cls):
        if name in _HEADS:
            raise ValueError(f"head {name!r} is already registered")
        _HEADS[name] = cls
        return cls

    return wrap


def build_head(name: str, **kwargs) -> nn.Module:
    """build_head(name, in_channels=C, num_classes=N, skeleton=Skeleton|None, **head_options)."""
    for module in _BUILTIN:
        importlib.import_module(f"keyreid.models.heads.{module}")
    if name not in _HEADS:
        raise KeyError(f"unknown head {name!r}; known: {sorted(_HEADS)}")
    return _HEADS[name](**kwargs)


def head_names() -> list[str]:
    for module in _BUILTIN:
        importlib.import_module(f"keyreid.models.heads.{module}")
    return sorted(_HEADS)
