"""PABR: part-aligned bilinear representations (Suh et al., ECCV 2018).

Two streams on the backbone map: an appearance map A (C_a channels) and a part map P (one channel
per keypoint). The part stream is a keypoint-heatmap predictor: it is trained with the heatmap loss
first (our stand-in for the COCO-pretrained pose network) and then fine-tuned by the re-ID loss
alone once `pose_epochs` have passed. The descriptor is the bilinear pooling
f = sum_xy a_xy (outer) p_xy, with signed square root and L2 normalisation, so <f_I, f_J> compares
the appearance of part k in I with the appearance of part k in J. Compact form: C_a is small
(default 128) and P has K channels, so the descriptor has C_a * K dimensions (2,176 for COCO-17).

Issue 11 (PABR 9 mAP below bnneck on the demo). Changed, the method not:
- feature_scale (default 10): the metric loss sees s * L2norm(f). At s = 1 every pair of images sat
  at distance 0.32 +- 0.02 at the start, so BoT's triplet margin 0.3 was the whole spread, and on a
  demo batch the re-ID losses sent a backbone gradient of norm 5.6 against 26 from the heatmap loss
  (kae: 80 against 8). At s = 10: 48 against 26. The retrieval ranking (cosine) does not depend on s.
- map_init_std (default 0.001): the part map's last conv starts near 0, as pose networks do; with
  the ReLU init the heatmap loss started at ~8 per pixel and was still 4.3 after two epochs.
  Both together: 52.3 -> 63.7 mAP on demo seed 0; 66.3 over seeds 0-2 (bnneck 62.9).
- appearance_channels 128 (was 64): 74.7 mAP over seeds 0-2, better on each seed by 7-10 points
  (bench/RESULTS.md has the one-seed ablations: signed square root, L2 normalisation, soft margin,
  global part, pose_epochs, heavier heatmap loss, compact bilinear pooling).
What the part stream learns: with the heatmap loss at weight 1 its maps do not become keypoint
heatmaps (64 channels: loss 0.178 -> 0.170 over 10 epochs, PCK@0.1 2% against 57% for a mean-pose
prior; 128: 7.7%); they are re-ID attention maps, which is what the paper's fine-tuning makes of its
pose stream too. At
loss.heatmap_weight 10 they localise (PCK@0.1 37%, @0.2 86%) and score 65.9 against 63.7 (seed 0),
but the blocks become less part-specific in the swap test (bench/head_probes.py).
Options for the ablations of bench/heads.py: signed_sqrt, l2_normalize, compact_dim (Tensor
Sketch), global_part (one uniform part map, whose block is the average appearance: a global
feature inside the bilinear form), pose_epochs, appearance_channels.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from keyreid.data.keypoints import Skeleton
from keyreid.losses.heatmap import HeatmapMSELoss
from keyreid.models.heads import register_head
from keyreid.models.heads.common import BNNeck, heatmap_loss, init_conv, width_from_weights
from keyreid.models.output import ModelOutput


@register_head("pabr")
class PABRHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, skeleton: Skeleton,
                 appearance_channels: int = 128, part_hidden: int = 128,
                 pose_epochs: Optional[int] = None, feature_scale: float = 10.0,
                 signed_sqrt: bool = True, global_part: bool = False,
                 map_init_std: Optional[float] = 0.001, l2_normalize: bool = True,
                 compact_dim: Optional[int] = None):
        super().__init__()
        if skeleton is None:
            raise ValueError("the pabr head needs a keypoint skeleton (dataset with keypoints)")
        k = skeleton.num_keypoints
        self.num_keypoints = k
        self.pose_epochs = pose_epochs
        self.feature_scale = feature_scale
        self.signed_sqrt = signed_sqrt
        self.global_part = global_part
        self.l2_normalize = l2_normalize
        self.compact_dim = compact_dim
        self.appearance = nn.Sequential(nn.Conv2d(in_channels, appearance_channels, 1, bias=False),
                                        nn.BatchNorm2d(appearance_channels), nn.ReLU(inplace=True))
        self.part = nn.Sequential(nn.Conv2d(in_channels, part_hidden, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(part_hidden), nn.ReLU(inplace=True),
                                  nn.Conv2d(part_hidden, k, 1))
        self.dim = appearance_channels * (k + int(global_part))
        if compact_dim is not None:
            # compact bilinear pooling (Gao et al., CVPR 2016: Tensor Sketch), which the paper uses
            # to shrink the bilinear descriptor: fixed random count sketches of a and p, their
            # circular convolution by FFT; <sketch(a x p), sketch(a' x p')> estimates <a x p, a' x p'>
            if compact_dim < 2:
                raise ValueError(f"pabr compact_dim must be at least 2, got {compact_dim}")
            g = torch.Generator().manual_seed(1)
            for name, c in (("sketch_a", appearance_channels), ("sketch_p", k + int(global_part))):
                rows = torch.randint(compact_dim, (c,), generator=g)
                signs = torch.randint(2, (c,), generator=g).float() * 2 - 1
                m = torch.zeros(c, compact_dim)
                m[torch.arange(c), rows] = signs
                self.register_buffer(name, m)
            self.dim = compact_dim
        self.neck = BNNeck(self.dim, num_classes)
        self.heatmap_loss = HeatmapMSELoss()
        init_conv(self)
        if map_init_std is not None:
            # the map predictor's last conv starts near 0, as in pose networks: with the ReLU
            # (kaiming) init its maps start with a per-pixel MSE of ~8 (pabr) / ~3 per map (aacn)
            # and the map losses then drive the backbone's first steps more than the re-ID losses
            nn.init.normal_(self.part[-1].weight, std=map_init_std)
            nn.init.zeros_(self.part[-1].bias)

    @staticmethod
    def options_from_weights(state: dict, options: dict) -> dict:
        """Checkpoints from before issue 11 were trained with 64 appearance channels, the default then."""
        return width_from_weights(state, options, "appearance_channels", "head.appearance.0.weight")

    def forward(self, fmap: torch.Tensor) -> ModelOutput:
        a = self.appearance(fmap)                                        # [B, Ca, h, w]
        heatmaps = self.part(fmap)                                       # [B, K, h, w]
        p = heatmaps.relu()
        if self.global_part:
            # a uniform part map: its bilinear block is the plain average of A, the global feature
            p = torch.cat([torch.ones_like(p[:, :1]), p], 1)
        if self.compact_dim is None:
            bilinear = torch.einsum("bchw,bkhw->bkc", a, p) / (a.shape[-1] * a.shape[-2])
            parts = bilinear
            f = bilinear.flatten(1)
        else:
            parts = None  # a sketch has no per-part blocks
            f = self._tensor_sketch(a, p)
        if self.signed_sqrt:
            f = torch.sign(f) * torch.sqrt(f.abs() + 1e-8)
        # without the L2 normalisation the descriptor keeps its own scale (feature_scale unused)
        feature = self.feature_scale * F.normalize(f, dim=1) if self.l2_normalize else f
        embedding, logits = self.neck(feature)
        return ModelOutput(embedding=embedding, feature=feature, logits=logits, heatmaps=heatmaps,
                           part_features=parts)

    def _tensor_sketch(self, a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Average over locations of the Tensor Sketch of a_xy (outer) p_xy: [B, compact_dim]."""
        d = self.compact_dim
        sa = torch.einsum("bchw,cd->bhwd", a, self.sketch_a).float()
        sp = torch.einsum("bkhw,kd->bhwd", p, self.sketch_p).float()
        conv = torch.fft.irfft(torch.fft.rfft(sa, dim=-1) * torch.fft.rfft(sp, dim=-1), n=d, dim=-1)
        return conv.mean(dim=(1, 2)).to(a.dtype)

    def keypoint_losses(self, out: ModelOutput, keypoints: torch.Tensor, image_hw: tuple[int, int],
                        sigma: float, epoch: int = 0) -> dict[str, torch.Tensor]:
        if self.pose_epochs is not None and epoch >= self.pose_epochs:
            return {}  # fine-tuned by the re-ID loss alone from here on
        return {"heatmap": heatmap_loss(self.heatmap_loss, out.heatmaps, keypoints, image_hw, sigma)}
