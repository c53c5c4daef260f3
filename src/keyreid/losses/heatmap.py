"""Visibility-weighted heatmap regression loss (KAE-Net auxiliary task)."""

from __future__ import annotations

import torch
from torch import nn

from keyreid.losses._pairs import upcast
from keyreid.losses.registry import register_loss


@register_loss("heatmap_mse")
class HeatmapMSELoss(nn.Module):
    """Weighted MSE between predicted and target heatmaps.

    pred, target: [B, K, h, w]; weights: [B, K] (visibility, or a confidence in [0, 1]).
    Per map m_bk = mean over pixels of (pred - target)^2;
    loss = sum_bk w_bk * m_bk / #{w_bk > 0}: a mean over visible maps, so invisible
    keypoints neither add error nor dilute the average. No visible map: 0, still in the graph.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        if pred.dim() != 4 or pred.shape != target.shape:
            raise ValueError(f"pred and target must both be [B, K, h, w], got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        if weights.shape != pred.shape[:2]:
            raise ValueError(f"weights must be [B, K] = {tuple(pred.shape[:2])}, "
                             f"got {tuple(weights.shape)}")
        per_map = (upcast(pred) - upcast(target)).pow(2).mean(dim=(2, 3))
        w = weights.to(per_map.dtype)
        count = (w > 0).sum().clamp_min(1)
        return (w * per_map).sum() / count
