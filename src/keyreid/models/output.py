"""The one typed output every model returns, in training and evaluation alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class ModelOutput:
    """embedding: what retrieval compares (post-BN for BNNeck-style heads), [B, D].
    feature: the pre-BN feature metric losses use, [B, D].
    logits: identity logits [B, num_classes] (None without a classifier).
    heatmaps: predicted keypoint heatmaps [B, K, h, w] (heads with an auxiliary keypoint task).
    part_features: per-part vectors [B, P, d] in part order (keypoint order for kae).
    part_weights: per-part visibility / confidence [B, P] (aacn).
    maps: other predicted maps by name (aacn: "nonrigid", "rigid").
    branches: (pre-BN feature, logits) of each branch of a multi-branch head (stripes), each
    trained with its own ID and metric loss; empty for single-branch heads, whose one branch is
    (feature, logits)."""

    embedding: torch.Tensor
    feature: torch.Tensor
    logits: Optional[torch.Tensor] = None
    heatmaps: Optional[torch.Tensor] = None
    part_features: Optional[torch.Tensor] = None
    part_weights: Optional[torch.Tensor] = None
    maps: dict = field(default_factory=dict)
    branches: list = field(default_factory=list)
