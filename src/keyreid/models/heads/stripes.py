"""The AdaptiveReID authors' model: a global branch and horizontal stripes, each on its own copy of
the backbone's last stage (methods.md section 2, "Baseline it was built on").

The backbone runs up to its last stage (conv4 of a ResNet); this head holds two copies of that
stage, both starting from the backbone's (pretrained) weights:
- global branch: stage copy 1 -> global average pool -> clip to [0, clip_max];
- stripe branch: stage copy 2 -> the map cut into `stripes` horizontal bands (the last band takes
  the remainder rows) -> per band a 3x3 conv to C / stripes channels + ReLU -> pool -> clip.
Every branch has its own BNNeck and classifier and its own ID and metric losses (the trainer's
Criterion sums them over ModelOutput.branches). One difference from the authors' Keras code: our
BNNeck keeps BN's bias at 0 (BoT), theirs learns it. The embedding is the concatenation of the
branches' clipped pre-BN features, as the authors' inference model returns; embedding="post_bn"
concatenates the BN outputs instead.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn as nn

from keyreid.models.heads import register_head
from keyreid.models.heads.common import BNNeck, init_conv, pool
from keyreid.models.output import ModelOutput


@register_head("stripes")
class StripesHead(nn.Module):
    """Options: stripes (bands in the stripe branch, 0 = global branch only), share_stage (one
    stage copy for both branches), clip_max (upper clip of the pooled features; None: none),
    embedding ("pre_bn" | "post_bn"), pooling ("avg" | "max" | "gem")."""

    # build_model hands this head the backbone's last stage (see Backbone.pop_last_stage).
    takes_last_stage = True

    def __init__(self, in_channels: int, num_classes: int, skeleton=None,
                 last_stage: Optional[nn.Module] = None, stripes: int = 2, share_stage: bool = False,
                 clip_max: Optional[float] = 1.0, embedding: str = "pre_bn", pooling: str = "avg"):
        super().__init__()
        if last_stage is None:
            raise ValueError("the stripes head needs the backbone's last stage (build it with build_model)")
        if stripes < 0:
            raise ValueError(f"stripes must be >= 0, got {stripes}")
        if embedding not in ("pre_bn", "post_bn"):
            raise ValueError(f"embedding must be pre_bn or post_bn, got {embedding!r}")
        self.stripes, self.clip_max, self.embedding, self.pooling = stripes, clip_max, embedding, pooling
        self.global_stage = last_stage
        self.stripe_stage = None
        self.reducers = nn.ModuleList()
        if stripes:
            self.stripe_stage = last_stage if share_stage else copy.deepcopy(last_stage)
            self.reducers = nn.ModuleList(
                nn.Sequential(nn.Conv2d(in_channels, in_channels // stripes, 3, padding=1), nn.ReLU(inplace=True))
                for _ in range(stripes))
            init_conv(self.reducers)
        self.branch_dims = [in_channels] + [in_channels // stripes] * stripes
        self.necks = nn.ModuleList(BNNeck(d, num_classes) for d in self.branch_dims)
        self.dim = sum(self.branch_dims)

    def pretrained_modules(self) -> list[nn.Module]:
        return [m for m in (self.global_stage, self.stripe_stage) if m is not None]

    def _pool(self, fmap: torch.Tensor) -> torch.Tensor:
        feature = pool(fmap, self.pooling)
        return feature if self.clip_max is None else feature.clamp(0.0, self.clip_max)

    def forward(self, fmap: torch.Tensor) -> ModelOutput:
        features = [self._pool(self.global_stage(fmap))]
        if self.stripes:
            stripe_map = self.stripe_stage(fmap)
            height = stripe_map.shape[-2]
            if height < self.stripes:
                raise ValueError(f"a feature map {height} rows high cannot be cut into {self.stripes} "
                                 "stripes; use larger images or fewer stripes")
            size = height // self.stripes
            for i, reduce in enumerate(self.reducers):
                end = height if i == self.stripes - 1 else (i + 1) * size
                features.append(self._pool(reduce(stripe_map[..., i * size:end, :])))
        necks = [neck(f) for neck, f in zip(self.necks, features)]
        feature = torch.cat(features, dim=1)
        embedding = feature if self.embedding == "pre_bn" else torch.cat([e for e, _ in necks], dim=1)
        return ModelOutput(embedding=embedding, feature=feature, logits=necks[0][1],
                           branches=[(f, lg) for f, (_, lg) in zip(features, necks)])
