"""name -> model: a backbone and a head, one forward returning ModelOutput."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from keyreid.config import ConfigValueError, ModelConfig
from keyreid.data.keypoints import Skeleton
from keyreid.errors import KeyreidError
from keyreid.models.backbones import build_backbone
from keyreid.models.heads import HEADS, build_head
from keyreid.models.output import ModelOutput

KEYPOINT_HEADS = ("kae", "aacn", "pabr")


class ReIDModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def embedding_dim(self) -> int:
        return self.head.dim

    def pretrained_modules(self) -> list[nn.Module]:
        """The modules that start from the backbone's (ImageNet) weights: the backbone, and the
        copies of its last stage a head may hold (stripes)."""
        extra = self.head.pretrained_modules() if hasattr(self.head, "pretrained_modules") else []
        return [self.backbone, *extra]

    @property
    def uses_keypoints(self) -> bool:
        return hasattr(self.head, "keypoint_losses")

    def forward(self, images: torch.Tensor) -> ModelOutput:
        return self.head(self.backbone(images))

    def keypoint_losses(self, out: ModelOutput, keypoints: torch.Tensor, image_hw: tuple[int, int],
                        sigma: float, epoch: int = 0) -> dict[str, torch.Tensor]:
        if not self.uses_keypoints:
            return {}
        return self.head.keypoint_losses(out, keypoints, image_hw, sigma, epoch=epoch)


def build_model(cfg: ModelConfig, num_classes: int, skeleton: Optional[Skeleton] = None) -> ReIDModel:
    if cfg.head in KEYPOINT_HEADS and skeleton is None:
        raise ConfigValueError(f"model.head={cfg.head!r} learns from keypoints, but the training data has none: "
                         "give data.sidecar (see `keyreid keypoints estimate`) or use head bnneck")
    backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained, last_stride=cfg.last_stride,
                              channels_last=cfg.channels_last)
    options = dict(cfg.head_options)
    in_channels = backbone.out_channels
    if getattr(HEADS.get(cfg.head), "takes_last_stage", False):
        options["last_stage"] = backbone.pop_last_stage()  # the head runs (copies of) it
    try:
        head = build_head(cfg.head, in_channels=in_channels, num_classes=num_classes,
                          skeleton=skeleton, **options)
    except (ValueError, TypeError) as e:
        if isinstance(e, KeyreidError):
            raise
        # a head checks its options when built: those are the user's model.head_options
        raise ConfigValueError(f"model.head_options of head {cfg.head!r}: {e}") from None
    return ReIDModel(backbone, head)
