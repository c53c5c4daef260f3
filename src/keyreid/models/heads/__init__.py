"""Heads, one module each, built by name: bnneck, kae, aacn, pabr."""

from __future__ import annotations

import torch.nn as nn

from keyreid.utils.registry import Registry

HEADS = Registry("head", builtin=[f"keyreid.models.heads.{m}" for m in ("bnneck", "kae", "aacn", "pabr")])
register_head = HEADS.register


def build_head(name: str, **kwargs) -> nn.Module:
    """build_head(name, in_channels=C, num_classes=N, skeleton=Skeleton|None, **head_options)."""
    return HEADS.build(name, **kwargs)


def head_names() -> list[str]:
    return HEADS.names()
