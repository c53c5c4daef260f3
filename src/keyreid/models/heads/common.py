"""Pieces every head shares: the BNNeck and weight initialisation."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from keyreid.models.targets import keypoint_heatmaps


class BNNeck(nn.Module):
    """BoT's neck: BN on the pooled feature (bias frozen at 0), then a bias-free classifier.

    Metric losses use the feature before BN, the ID loss the logits after it, and retrieval the
    post-BN embedding."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.classifier: Optional[nn.Linear] = None
        if num_classes > 0:
            self.classifier = nn.Linear(dim, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        embedding = self.bn(feature)
        logits = self.classifier(embedding) if self.classifier is not None else None
        return embedding, logits


def init_conv(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def gem(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over the spatial dimensions."""
    return x.clamp_min(eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def pool(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "avg":
        return x.mean(dim=(-2, -1))
    if kind == "max":
        return x.amax(dim=(-2, -1))
    if kind == "gem":
        return gem(x)
    raise ValueError(f"unknown pooling {kind!r}; use avg, max or gem")


def heatmap_loss(loss: nn.Module, heatmaps: torch.Tensor, keypoints: torch.Tensor,
                 image_hw: tuple[int, int], sigma: float) -> torch.Tensor:
    """Visibility-weighted loss of predicted keypoint heatmaps against Gaussians rendered at their
    resolution (shared by kae, aacn and pabr)."""
    target, weights = keypoint_heatmaps(keypoints, image_hw, tuple(heatmaps.shape[-2:]), sigma)
    return loss(heatmaps, target, weights)


def width_from_weights(state: dict, options: dict, option: str, weight_key: str) -> dict:
    """{option: the output channels of state[weight_key]} when `options` do not state it: for a
    head whose default width changed after a checkpoint was written (heads' options_from_weights,
    used by keyreid.inference.load_model)."""
    weight = state.get(weight_key)
    if option in options or weight is None:
        return {}
    return {option: int(weight.shape[0])}
