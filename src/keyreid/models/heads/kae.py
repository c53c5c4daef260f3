"""KAE-Net: keypoint-aligned embeddings (Moskvyak et al., WACV 2021), as read in methods.md.

A 1x1 convolution splits the backbone map into K groups of `group_channels` channels, one per
keypoint, plus a global group. Each keypoint group alone feeds a small decoder that reconstructs
that keypoint's heatmap (visibility-weighted MSE), which forces the group's channels to be the ones
the keypoint activates. Each group is pooled to a part vector; the embedding is the concatenation
[e_global, e_1, ..., e_K] in keypoint order, so dimension k*c..(k+1)*c always describes keypoint k
whatever the pose. Keypoints are needed only in training; at test time the decoder's output is
simply unused.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from keyreid.data.keypoints import Skeleton
from keyreid.losses.heatmap import HeatmapMSELoss
from keyreid.models.heads import register_head
from keyreid.models.heads.common import BNNeck, heatmap_loss, init_conv, pool
from keyreid.models.output import ModelOutput


@register_head("kae")
class KAEHead(nn.Module):
    """Options: group_channels (c per keypoint), global_channels (0 drops the global group),
    upsample (1, 2 or 4: heatmaps at that multiple of the feature-map resolution), decoder
    ("deconv": log2(u) grouped 4x4 stride-2 transposed-conv stages + BN + ReLU, then a grouped
    1x1 conv; "subpixel": a grouped 3x3 conv + BN + ReLU at feature resolution, then a grouped
    1x1 conv to u*u maps per keypoint and a pixel shuffle: ~10 points less step overhead on
    MobileNetV2, ~2 mAP less on the demo, bench/RESULTS.md), pooling
    ("avg" | "max" | "gem" | "heatmap": weight each group by its own predicted heatmap), and
    detach_pooling_weights for heatmap pooling."""

    def __init__(self, in_channels: int, num_classes: int, skeleton: Skeleton,
                 group_channels: int = 32, global_channels: int = 128, upsample: int = 2,
                 decoder: str = "deconv", pooling: str = "avg", global_pooling: str = "avg"):
        super().__init__()
        if skeleton is None:
            raise ValueError("the kae head needs a keypoint skeleton (dataset with keypoints)")
        if upsample not in (1, 2, 4):
            raise ValueError(f"kae upsample must be 1, 2 or 4, got {upsample}")
        if decoder not in ("subpixel", "deconv"):
            raise ValueError(f"kae decoder must be subpixel or deconv, got {decoder!r}")
        k, c = skeleton.num_keypoints, group_channels
        self.num_keypoints, self.group_channels, self.global_channels = k, c, global_channels
        self.pooling, self.global_pooling = pooling, global_pooling
        self.split = nn.Sequential(
            nn.Conv2d(in_channels, k * c + global_channels, 1, bias=False),
            nn.BatchNorm2d(k * c + global_channels),
            nn.ReLU(inplace=True),
        )
        # Grouped convolutions keep the decoders independent: heatmap k sees only group k (a
        # pixel shuffle maps channels u*u*k .. u*u*(k+1)-1 to channel k, so groups keep their slot).
        if decoder == "subpixel":
            self.decoder = nn.Sequential(
                nn.Conv2d(k * c, k * c, 3, padding=1, groups=k, bias=False),
                nn.BatchNorm2d(k * c), nn.ReLU(inplace=True),
                nn.Conv2d(k * c, k * upsample * upsample, 1, groups=k),
                nn.PixelShuffle(upsample))
        else:
            stages = []
            for _ in range({1: 0, 2: 1, 4: 2}[upsample]):
                stages += [nn.ConvTranspose2d(k * c, k * c, 4, stride=2, padding=1, groups=k, bias=False),
                           nn.BatchNorm2d(k * c), nn.ReLU(inplace=True)]
            stages.append(nn.Conv2d(k * c, k, 1, groups=k))
            self.decoder = nn.Sequential(*stages)
        self.dim = k * c + global_channels
        self.neck = BNNeck(self.dim, num_classes)
        self.heatmap_loss = HeatmapMSELoss()
        init_conv(self)

    def forward(self, fmap: torch.Tensor) -> ModelOutput:
        b = fmap.shape[0]
        k, c = self.num_keypoints, self.group_channels
        z = self.split(fmap)
        groups, global_map = z[:, : k * c], z[:, k * c:]
        heatmaps = self.decoder(groups)
        g = groups.reshape(b, k, c, *groups.shape[-2:])
        if self.pooling == "heatmap":
            # plain ints: ONNX export needs a constant output size (only the batch axis is dynamic)
            w = F.adaptive_avg_pool2d(heatmaps, [int(s) for s in groups.shape[-2:]]).relu()
            w = w / w.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
            parts = (g * w.unsqueeze(2)).sum(dim=(-2, -1))
        else:
            parts = pool(g, self.pooling)                                  # [B, K, c]
        pieces = [parts.reshape(b, k * c)]
        if self.global_channels:
            pieces.insert(0, pool(global_map, self.global_pooling))
        feature = torch.cat(pieces, dim=1)
        embedding, logits = self.neck(feature)
        return ModelOutput(embedding=embedding, feature=feature, logits=logits, heatmaps=heatmaps,
                           part_features=parts)

    def keypoint_losses(self, out: ModelOutput, keypoints: torch.Tensor, image_hw: tuple[int, int],
                        sigma: float, epoch: int = 0) -> dict[str, torch.Tensor]:
        return {"heatmap": heatmap_loss(self.heatmap_loss, out.heatmaps, keypoints, image_hw, sigma)}
