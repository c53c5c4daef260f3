"""The inference graph of a trained model: images -> embedding, nothing else.

Every head computes its embedding in eval mode from the backbone's feature map; what it computes
besides (identity logits, kae's heatmap decoder) only serves training. `EmbeddingGraph` holds a
pruned copy of the model: classifiers are removed, kae's decoder too unless its pooling reads the
heatmaps (pooling="heatmap"). What a head still computes and does not use for the embedding
(aacn's keypoint slice of its attention conv, stripes' BNNecks under pre-BN embeddings) is dead
code that the ONNX exporter drops. Per head, the eval-mode embedding needs:
- bnneck: pooled feature (-> optional linear) -> BN;
- kae: split conv -> per-keypoint pooling (+ the decoder for heatmap pooling) -> BN;
- aacn: attention maps (non-rigid and rigid parts) + reduced and global maps -> BN;
- pabr: appearance and part streams -> bilinear pooling -> signed sqrt, L2 -> BN;
- stripes: two copies of the last stage -> clipped pooled features (-> BNs for post_bn).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from keyreid.models.heads.common import BNNeck


class _NoHeatmaps(nn.Module):
    """Stands in for a decoder whose heatmaps the embedding does not read."""

    def forward(self, x: torch.Tensor) -> None:
        return None


def prune_for_inference(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode without the modules only training uses."""
    model = copy.deepcopy(model).cpu().eval()
    for m in model.modules():
        if isinstance(m, BNNeck):
            m.classifier = None
    head = model.head
    if hasattr(head, "decoder") and getattr(head, "pooling", None) != "heatmap":
        head.decoder = _NoHeatmaps()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class EmbeddingGraph(nn.Module):
    """images [B, 3, H, W] (normalised) -> (embedding, raw_embedding), each [B, D].

    embedding is L2-normalised when `normalize` (cosine models, what an index stores);
    raw_embedding is the model's embedding as it is (for flip averaging before normalising)."""

    def __init__(self, model: nn.Module, normalize: bool):
        super().__init__()
        self.model = prune_for_inference(model)
        self.normalize = normalize

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.model(images).embedding
        return (F.normalize(raw, dim=1) if self.normalize else raw), raw
