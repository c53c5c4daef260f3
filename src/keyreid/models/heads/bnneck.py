"""BoT global head: pooled backbone feature -> BNNeck."""

from __future__ import annotations

import torch
import torch.nn as nn

from keyreid.models.heads import register_head
from keyreid.models.heads.common import BNNeck, pool
from keyreid.models.output import ModelOutput


@register_head("bnneck")
class BNNeckHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, skeleton=None, pooling: str = "avg",
                 embed_dim: int = 0):
        super().__init__()
        self.pooling = pooling
        self.reduce = nn.Linear(in_channels, embed_dim) if embed_dim else None
        self.dim = embed_dim or in_channels
        self.neck = BNNeck(self.dim, num_classes)

    def forward(self, fmap: torch.Tensor) -> ModelOutput:
        feature = pool(fmap, self.pooling)
        if self.reduce is not None:
            feature = self.reduce(feature)
        embedding, logits = self.neck(feature)
        return ModelOutput(embedding=embedding, feature=feature, logits=logits)
