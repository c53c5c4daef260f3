"""AACN: attention-aware compositional network (Xu et al., CVPR 2018), as the slides describe it.

Pose-guided part attention: from the backbone map the head predicts keypoint confidence maps K,
non-rigid part maps N (bands joining the two keypoints of each limb) and rigid part maps R (boxes
tightly containing sets of keypoints), each trained with MSE against targets rendered from the
keypoints. Attention-aware alignment: each part map M_p, normalised by its maximum, masks the
(reduced) feature map, F_p = F * M_p, and f_p = GAP(F_p). Visibility score v_p = mean over pixels of
|M_p|. Weighted composition: f = concat_p(w_p * f_p) with w_p = P * v_p / sum_q v_q (mean weight 1),
concatenated after a global feature.

Issue 11 (AACN 9 mAP below bnneck on the demo). Found and fixed: the global stream was reduced to
256 channels while the part streams add P x 64 (25 parts: 1,600 dims), so the BNNeck feature was
mostly parts; as wide as the backbone (global_channels None, the default) it scored 64.2 mAP on demo
seed 0 against 52.1 (63.7 over seeds 0-2, bnneck 62.9). Then the part-map losses (non-rigid, rigid)
weighted 0.1 instead of 1.0 (map_loss_weight, the slides' mu_1 = mu_2; the keypoint map keeps
loss.heatmap_weight): 65.5 over seeds 0-2, better on every seed (+1.6, +0.8, +3.0). Why it stays
below kae, measured with bench/head_probes.py: its part blocks are nearly interchangeable (swapping
block k with a donor's block k moves a query towards the donor hardly more than swapping in another
of the donor's blocks, 10.7 vs 8.2; kae: 27.0 vs -0.1), consistent with how they are made: each is an
average of one map under a mask that keeps only 24-38% of its mass inside its part (a uniform mask:
16-22%) at the backbone's 8x4 resolution. bench/RESULTS.md has the ablations (map loss weight, visibility weighting, max
normalisation, per-part embeddings, detached attention, head learning rate).
map_init_std (default None: the ReLU init): starting the maps' last conv near 0 scored 48.0 against
52.1 with the old width. The slides train the part attention (PPA) on its own, before the re-ID
network (detach_attention: the re-ID losses do not reshape the maps).
Options for the ablations of bench/heads.py: map_init_std, map_loss_weight (the slides' mu_1, mu_2),
visibility_weighting, max_normalize, part_channels, global_channels, part_stream, detach_attention.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from keyreid.data.keypoints import Skeleton
from keyreid.losses.heatmap import HeatmapMSELoss
from keyreid.models.heads import register_head
from keyreid.models.heads.common import BNNeck, heatmap_loss, init_conv, width_from_weights
from keyreid.models.output import ModelOutput
from keyreid.models.targets import box_maps, limb_maps

# Rigid parts: sets of keypoints whose tight box is one part, per skeleton.
RIGID_PARTS: dict[str, list[tuple[str, ...]]] = {
    "coco17": [
        ("nose", "left_eye", "right_eye", "left_ear", "right_ear"),                    # head
        ("left_shoulder", "right_shoulder", "left_hip", "right_hip"),                  # torso
        ("left_hip", "right_hip", "left_knee", "right_knee"),                          # thighs
        ("left_knee", "right_knee", "left_ankle", "right_ankle"),                      # shins
        ("left_shoulder", "left_elbow", "left_wrist"),                                 # left arm
        ("right_shoulder", "right_elbow", "right_wrist"),                              # right arm
    ],
    "cub15": [
        ("beak", "crown", "forehead", "left_eye", "right_eye", "nape", "throat"),      # head
        ("back", "breast", "belly", "nape", "throat"),                                 # body
        ("left_wing", "right_wing", "back"),                                           # wings
        ("tail", "left_leg", "right_leg", "belly"),                                    # lower body
    ],
    "veri20": [
        ("right_fog_lamp", "left_fog_lamp", "right_headlight", "left_headlight", "front_logo",
         "front_plate"),                                                               # front
        ("left_rear_lamp", "right_rear_lamp", "rear_logo", "rear_plate"),              # rear
        ("right_front_roof", "left_front_roof", "left_back_roof", "right_back_roof"),  # roof
        ("left_front_wheel", "left_back_wheel", "left_mirror", "left_front_roof",
         "left_back_roof"),                                                            # left side
        ("right_front_wheel", "right_back_wheel", "right_mirror", "right_front_roof",
         "right_back_roof"),                                                           # right side
    ],
}


@register_head("aacn")
class AACNHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, skeleton: Skeleton,
                 part_channels: int = 64, global_channels: Optional[int] = None, hidden: int = 128,
                 limb_sigma: float = 1.0, map_loss_weight: float = 0.1,
                 visibility_weighting: bool = True,
                 map_init_std: Optional[float] = None, detach_attention: bool = False,
                 part_stream: str = "shared", max_normalize: bool = True):
        super().__init__()
        if skeleton is None:
            raise ValueError("the aacn head needs a keypoint skeleton (dataset with keypoints)")
        if skeleton.name not in RIGID_PARTS or not skeleton.limbs:
            raise ValueError(f"aacn has no part definition for skeleton {skeleton.name!r}")
        self.skeleton = skeleton
        self.limbs = list(skeleton.limbs)
        self.rigid = [tuple(skeleton.index(n) for n in g) for g in RIGID_PARTS[skeleton.name]]
        k, n, r = skeleton.num_keypoints, len(self.limbs), len(self.rigid)
        self.num_keypoints, self.num_limbs, self.num_rigid = k, n, r
        self.limb_sigma = limb_sigma
        self.map_loss_weight = map_loss_weight
        self.visibility_weighting = visibility_weighting
        self.detach_attention = detach_attention
        self.max_normalize = max_normalize
        if part_stream not in ("shared", "per_part"):
            raise ValueError(f"aacn part_stream must be shared or per_part, got {part_stream!r}")
        self.part_stream = part_stream
        # the global stream as wide as the backbone by default (issue 11: 256 beside 1,600 part dims
        # made the feature mostly parts, and scored 52.1 mAP on demo seed 0 against 64.2)
        global_channels = in_channels if global_channels is None else global_channels
        self.global_dim = global_channels
        self.attention = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
                                       nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                                       nn.Conv2d(hidden, k + n + r, 1))
        if part_stream == "shared":
            self.reduce = nn.Sequential(nn.Conv2d(in_channels, part_channels, 1, bias=False),
                                        nn.BatchNorm2d(part_channels), nn.ReLU(inplace=True))
        else:
            # per part: the attention masks the backbone map itself, then the part's own linear
            # embedding maps the masked average to part_channels
            self.part_embed = nn.Parameter(torch.empty(n + r, in_channels, part_channels))
        self.global_reduce = nn.Sequential(nn.Conv2d(in_channels, global_channels, 1, bias=False),
                                           nn.BatchNorm2d(global_channels), nn.ReLU(inplace=True))
        self.dim = global_channels + (n + r) * part_channels
        self.neck = BNNeck(self.dim, num_classes)
        self.heatmap_loss = HeatmapMSELoss()
        init_conv(self)
        if part_stream == "per_part":
            # fan-in init (a linear layer's): the part slice then starts with a norm like the
            # shared stream's (~16 against ~10 on a demo batch); the fan-out init of the 1x1 convs
            # made it ~100, and the triplet loss then saw the parts only
            nn.init.normal_(self.part_embed, std=in_channels ** -0.5)
        if map_init_std is not None:
            # the map predictor's last conv starts near 0, as in pose networks: with the ReLU
            # (kaiming) init its maps start with a per-pixel MSE of ~8 (pabr) / ~3 per map (aacn)
            # and the map losses then drive the backbone's first steps more than the re-ID losses
            nn.init.normal_(self.attention[-1].weight, std=map_init_std)
            nn.init.zeros_(self.attention[-1].bias)

    @staticmethod
    def options_from_weights(state: dict, options: dict) -> dict:
        """Options a checkpoint's weights decide that its config may not state: checkpoints from
        before issue 11 were trained with a 256-wide global stream, the default then."""
        return width_from_weights(state, options, "global_channels", "head.global_reduce.0.weight")

    def forward(self, fmap: torch.Tensor) -> ModelOutput:
        k, n = self.num_keypoints, self.num_limbs
        maps = self.attention(fmap)
        heatmaps, nonrigid, rigid = maps[:, :k], maps[:, k:k + n], maps[:, k + n:]
        parts_maps = torch.cat([nonrigid, rigid], 1).abs()                     # [B, P, h, w]
        if self.detach_attention:
            # the attention is learnt from the pose targets alone, as the slides' separately
            # trained PPA: the re-ID losses use the maps but do not reshape them
            parts_maps = parts_maps.detach()
        m = parts_maps / parts_maps.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6) \
            if self.max_normalize else parts_maps
        if self.part_stream == "shared":
            f = self.reduce(fmap)                                              # [B, c, h, w]
            parts = torch.einsum("bphw,bchw->bpc", m, f) / (f.shape[-1] * f.shape[-2])
        else:
            pooled = torch.einsum("bphw,bchw->bpc", m, fmap) / (fmap.shape[-1] * fmap.shape[-2])
            parts = torch.einsum("bpC,pCc->bpc", pooled, self.part_embed)     # [B, P, c]
        visibility = parts_maps.mean(dim=(-2, -1))                             # [B, P]
        weights = visibility.shape[1] * visibility / visibility.sum(1, keepdim=True).clamp_min(1e-6)
        if not self.visibility_weighting:
            weights = torch.ones_like(weights)
        global_feature = self.global_reduce(fmap).mean(dim=(-2, -1))
        feature = torch.cat([global_feature, (parts * weights.unsqueeze(-1)).flatten(1)], 1)
        embedding, logits = self.neck(feature)
        return ModelOutput(embedding=embedding, feature=feature, logits=logits, heatmaps=heatmaps,
                           part_features=parts, part_weights=weights,
                           maps={"nonrigid": nonrigid, "rigid": rigid})

    def keypoint_losses(self, out: ModelOutput, keypoints: torch.Tensor, image_hw: tuple[int, int],
                        sigma: float, epoch: int = 0) -> dict[str, torch.Tensor]:
        size = tuple(out.heatmaps.shape[-2:])
        nt, nw = limb_maps(keypoints, self.limbs, image_hw, size, self.limb_sigma)
        rt, rw = box_maps(keypoints, self.rigid, image_hw, size)
        return {
            "heatmap": heatmap_loss(self.heatmap_loss, out.heatmaps, keypoints, image_hw, sigma),
            "nonrigid": self.map_loss_weight * self.heatmap_loss(out.maps["nonrigid"], nt, nw),
            "rigid": self.map_loss_weight * self.heatmap_loss(out.maps["rigid"], rt, rw),
        }
