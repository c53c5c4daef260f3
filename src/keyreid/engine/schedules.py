"""Learning-rate schedules as per-epoch factors (BoT style: linear warmup, then steps or cosine)."""

from __future__ import annotations

import math

from keyreid.config import ConfigValueError, OptimConfig


def lr_factor(epoch: float, cfg: OptimConfig) -> float:
    """Multiplier of the base learning rate at (possibly fractional) `epoch`."""
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        alpha = epoch / cfg.warmup_epochs
        return cfg.warmup_factor * (1 - alpha) + alpha
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        span = max(1, cfg.epochs - cfg.warmup_epochs)
        t = min(1.0, (epoch - cfg.warmup_epochs) / span)
        return 0.5 * (1 + math.cos(math.pi * t))
    raise ConfigValueError(f"optim.schedule={cfg.schedule!r} is not allowed; use multistep or cosine")
