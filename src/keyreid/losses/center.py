"""Center loss (Wen et al., ECCV 2016), as used in BoT."""

from __future__ import annotations

import torch
from torch import nn

from keyreid.losses._pairs import check_batch, upcast
from keyreid.losses.registry import register_loss


@register_loss("center")
class CenterLoss(nn.Module):
    """L = mean_i ||x_i - c_{y_i}||^2; the module owns the centers.

    The centers are ordinary parameters learned by gradient descent. BoT trains them with a
    separate SGD optimizer (lr 0.5) and weights this loss by 0.0005; with plain SGD at lr,
    one step moves c_y by lr * 2 / B * sum_{i: y_i = y} (x_i - c_y).
    """

    def __init__(self, num_classes: int, feat_dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_batch(embeddings, labels)
        diff = upcast(embeddings) - upcast(self.centers[labels.long()])
        return diff.pow(2).sum(dim=1).mean()

    def extra_repr(self) -> str:
        c, d = self.centers.shape
        return f"num_classes={c}, feat_dim={d}"
