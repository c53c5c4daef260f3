"""Reading and writing checkpoints, below both the engine and inference: a killed run never
leaves a half-written file behind, and a foreign or damaged file is one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from keyreid.errors import KeyreidError
from keyreid.utils.io import atomic_write


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        # through a Python file object: a full disk is then an OSError (ENOSPC) that atomic_write
        # reports, where torch's own file writer turns it into an opaque RuntimeError
        with open(tmp, "wb") as f:
            torch.save(state, f)

    atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise KeyreidError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a foreign or damaged file
        raise KeyreidError(f"{path}: not a readable checkpoint ({e})") from None


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the bare model (without a DistributedDataParallel wrapper)."""
    return getattr(model, "module", model).state_dict()
