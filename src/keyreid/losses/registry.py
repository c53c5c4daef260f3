"""Loss registry: a config names a loss, users add their own without editing ours."""

from __future__ import annotations

from torch import nn

from keyreid.utils.registry import Registry

LOSSES = Registry("loss")
register_loss = LOSSES.register


def loss_names() -> list[str]:
    return LOSSES.names()


def build_loss(name: str, **kwargs) -> nn.Module:
    """Build the loss registered as `name`; keyword arguments go to its constructor."""
    return LOSSES.build(name, **kwargs)
