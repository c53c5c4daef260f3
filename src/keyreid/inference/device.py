"""Device names from configs and command lines, checked before any work starts."""

from __future__ import annotations

import torch

from keyreid.errors import KeyreidError


def resolve_device(name: str) -> torch.device:
    """`auto` is the GPU when there is one; an unavailable or unknown device is one clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KeyreidError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise KeyreidError(f"device {name!r} asked for, but this machine has no usable CUDA GPU; "
                               "use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise KeyreidError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) here")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise KeyreidError(f"device {name!r} asked for, but MPS is not available here")
    return device
