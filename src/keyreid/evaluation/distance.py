"""Query-gallery distance matrices, computed in chunks so memory stays at the matrix itself."""

from __future__ import annotations

import numpy as np
import torch

from keyreid.errors import KeyreidError


def check_finite(features: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        raise KeyreidError(f"{what}: {int(bad.sum())} of {len(features)} feature vectors contain NaN or "
                           f"infinite values (first at row {int(np.flatnonzero(bad)[0])}); the model "
                           "has probably diverged")


def as_tensor(features: np.ndarray, metric: str) -> torch.Tensor:
    """float32 tensor of the features, L2-normalised for the cosine distance."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown distance {metric!r}; use cosine or euclidean")
    t = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    return torch.nn.functional.normalize(t, dim=1) if metric == "cosine" else t


def block_distance(q: torch.Tensor, g: torch.Tensor, metric: str,
                   g_squared: torch.Tensor | None = None) -> torch.Tensor:
    """Distances of rows of q to rows of g, both from as_tensor: 1 - cos, or squared Euclidean."""
    if metric == "cosine":
        return 1.0 - q @ g.T
    g2 = (g * g).sum(1) if g_squared is None else g_squared
    return ((q * q).sum(1, keepdim=True) + g2[None] - 2.0 * (q @ g.T)).clamp_min_(0)


def distance_matrix(query: np.ndarray, gallery: np.ndarray, metric: str = "cosine",
                    chunk: int = 4096) -> np.ndarray:
    """float32 [Q, G]: cosine distance 1 - cos(q, g), or squared Euclidean distance."""
    check_finite(query, "query features")
    check_finite(gallery, "gallery features")
    q, g = as_tensor(query, metric), as_tensor(gallery, metric)
    out = np.empty((len(q), len(g)), dtype=np.float32)
    g2 = (g * g).sum(1)
    for s in range(0, len(q), chunk):
        out[s:s + chunk] = block_distance(q[s:s + chunk], g, metric, g2).numpy()
    return out
