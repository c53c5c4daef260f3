"""Heads, one module each, built by name: bnneck, kae, aacn, pabr, stripes."""

from __future__ import annotations

import inspect

import torch.nn as nn

from keyreid.errors import KeyreidError

from keyreid.utils.registry import Registry

HEADS = Registry("head", builtin=[f"keyreid.models.heads.{m}" for m in ("bnneck", "kae", "aacn", "pabr",
                                                                         "stripes")])
register_head = HEADS.register


def build_head(name: str, **kwargs) -> nn.Module:
    """build_head(name, in_channels=C, num_classes=N, skeleton=Skeleton|None, **head_options)."""
    cls = HEADS.get(name)
    allowed = set(inspect.signature(cls).parameters)
    unknown = set(kwargs) - allowed
    if unknown:
        options = sorted(allowed - {"in_channels", "num_classes", "skeleton", "last_stage"})
        raise KeyreidError(f"model.head_options: {sorted(unknown)} not understood by head {name!r}; "
                           f"its options: {options}")
    return cls(**kwargs)


def head_names() -> list[str]:
    return HEADS.names()
