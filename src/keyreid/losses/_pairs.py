"""Shared helpers for pair-based losses."""

from __future__ import annotations

import torch


def check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be [B, D], got {tuple(embeddings.shape)}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"labels must be [B] matching embeddings, got {tuple(labels.shape)}")


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) boolean [B, B] masks; an anchor is never its own positive."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def euclidean_distances(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pairwise Euclidean distances; the clamp keeps sqrt's gradient finite at 0."""
    sq = x.pow(2).sum(dim=1)
    d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.t())
    return d2.clamp_min(eps).sqrt()


def zero_with_grad(x: torch.Tensor) -> torch.Tensor:
    """A zero that stays attached to the graph, so backward() still works."""
    return x.sum() * 0.0


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half precision to float32 (losses are computed in full precision); float64 stays."""
    return x if x.dtype == torch.float64 else x.float()
