"""The model card a checkpoint carries: everything inference needs to rebuild and feed the model
without the training YAML (model config, skeleton, input size, pixel mean/std, embedding size,
distance) and a fingerprint that tells two models apart."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

import torch

CARD_FORMAT = "keyreid-model"
CARD_VERSION = 1


def weights_fingerprint(state: dict[str, torch.Tensor], model_config: dict) -> str:
    """sha256 over the inference config and every tensor (name, dtype, shape, bytes) in name
    order: equal fingerprints mean the same function of the image. 16 hex digits are plenty to
    tell models apart and short enough to print."""
    h = hashlib.sha256(json.dumps(model_config, sort_keys=True, default=str).encode())
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def make_card(*, model_config: dict, num_classes: int, skeleton: Optional[str], height: int,
              width: int, mean, std, embedding_dim: int, distance: str,
              state: dict[str, torch.Tensor]) -> dict[str, Any]:
    inference = {"model": model_config, "num_classes": int(num_classes), "skeleton": skeleton,
                 "input": {"height": int(height), "width": int(width),
                           "mean": [float(v) for v in mean], "std": [float(v) for v in std]},
                 "embedding_dim": int(embedding_dim), "distance": distance,
                 # cosine indexes store unit vectors; euclidean ones keep raw features
                 "normalized": distance == "cosine"}
    return {"format": CARD_FORMAT, "version": CARD_VERSION, **inference,
            "fingerprint": weights_fingerprint(state, inference)}
