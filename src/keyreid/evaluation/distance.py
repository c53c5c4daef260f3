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


def distance_matrix(query: np.ndarray, gallery: np.ndarray, metric: str = "cosine",
                    chunk: int = 4096) -> np.ndarray:
    """float32 [Q, G]: cosine distance 1 - cos(q, g), or squared Euclidean distance."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"unknown distance {metric!r}; use cosine or euclidean")
    check_finite(query, "query features")
    check_finite(gallery, "gallery features")
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    g = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32))
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    out = np.empty((len(q), len(g)), dtype=np.float32)
    g2 = (g * g).sum(1)
    for s in range(0, len(q), chunk):
        qc = q[s:s + chunk]
        if metric == "cosine":
            d = 1.0 - qc @ g.T
        else:
            d = ((qc * qc).sum(1, keepdim=True) + g2[None] - 2.0 * (qc @ g.T)).clamp_min_(0)
        out[s:s + chunk] = d.numpy()
    return out
