"""Triplet losses with in-batch mining: batch-hard (Hermans et al.) and EPHN (Xuan et al.)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from keyreid.losses._pairs import (check_batch, euclidean_distances, pair_masks, upcast,
                                   zero_with_grad)
from keyreid.losses.registry import register_loss


@register_loss("triplet")
class BatchHardTripletLoss(nn.Module):
    """Batch-hard triplet: per anchor the farthest positive and the nearest negative.

    margin: hinge max(0, d_ap - d_an + margin); soft_margin=True uses softplus(d_ap - d_an)
    instead (the margin is then ignored). Distances are Euclidean, on L2-normalised
    embeddings when normalize=True. Anchors without a positive or a negative in the batch
    are skipped; the loss is the mean over the remaining anchors.
    """

    def __init__(self, margin: float = 0.3, soft_margin: bool = False, normalize: bool = False):
        super().__init__()
        self.margin = margin
        self.soft_margin = soft_margin
        self.normalize = normalize

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_batch(embeddings, labels)
        x = upcast(embeddings)
        if self.normalize:
            x = F.normalize(x, dim=1)
        dist = euclidean_distances(x)
        pos, neg = pair_masks(labels)
        valid = pos.any(1) & neg.any(1)
        if not valid.any():
            return zero_with_grad(embeddings)
        # Masked-out entries are replaced, not multiplied, so they can never win the max/min.
        d_ap = dist.masked_fill(~pos, float("-inf")).amax(1)[valid]
        d_an = dist.masked_fill(~neg, float("inf")).amin(1)[valid]
        if self.soft_margin:
            return F.softplus(d_ap - d_an).mean()
        return F.relu(d_ap - d_an + self.margin).mean()

    def extra_repr(self) -> str:
        m = "soft" if self.soft_margin else self.margin
        return f"margin={m}, normalize={self.normalize}"


@register_loss("ephn")
class EasyPositiveHardNegativeLoss(nn.Module):
    """Easy-positive hard-negative triplet (Xuan et al., WACV 2020).

    Cosine similarity S; per anchor the most similar positive S_ap and the most similar
    (hardest) negative S_an; loss = -log(e^{S_ap/s} / (e^{S_ap/s} + e^{S_an/s}))
    = softplus((S_an - S_ap) / s), averaged over anchors that have both.
    """

    def __init__(self, scale: float = 0.1):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_batch(embeddings, labels)
        x = F.normalize(upcast(embeddings), dim=1)
        sim = x @ x.t()
        pos, neg = pair_masks(labels)
        valid = pos.any(1) & neg.any(1)
        if not valid.any():
            return zero_with_grad(embeddings)
        s_ap = sim.masked_fill(~pos, float("-inf")).amax(1)[valid]
        s_an = sim.masked_fill(~neg, float("-inf")).amax(1)[valid]
        # softplus is the numerically stable form of the two-way softmax cross-entropy.
        return F.softplus((s_an - s_ap) / self.scale).mean()

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
