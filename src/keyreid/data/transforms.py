"""Keypoint-aware image transforms: keypoints land on the pixel they marked, whatever happens.

Built on torchvision's transforms v2 functional API with `tv_tensors.KeyPoints`. Two details of
torchvision's keypoint geometry decide how it is used here:
- horizontal flip maps x to W - 1 - x and pad/crop shift by whole pixels: these agree with the
  pixel-centre convention keyreid uses (integer coordinates are pixel centres), so they are used as
  they are;
- resize scales x by W'/W, the convention of continuous (edge-based) coordinates; in pixel-centre
  coordinates a pixel centre x moves to (x + 0.5) * W'/W - 0.5, so keypoints are shifted by half a
  pixel around the resize.
A horizontal flip also swaps left and right keypoints (the skeleton's flip permutation), so that
index k still names the same body part after mirroring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TransformConfig:
    """Augmentation settings (BoT defaults: flip, pad-10 random crop, random erasing 0.5)."""

    height: int = 256
    width: int = 128
    flip_prob: float = 0.5
    pad: int = 10
    erase_prob: float = 0.5
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    interpolation: str = "bilinear"


def _interp(name: str) -> v2.InterpolationMode:
    return {"bilinear": v2.InterpolationMode.BILINEAR, "nearest": v2.InterpolationMode.NEAREST,
            "bicubic": v2.InterpolationMode.BICUBIC}[name]


class KeypointTransform:
    """Resize, (train only) flip with left/right swap, pad + random crop, normalise, random erasing.

    __call__(image: PIL.Image, keypoints: float [K, 3] or None) -> (tensor [3, H, W], keypoints
    float32 [K, 3] or None). Keypoints that leave the image get visibility 0. Randomness comes from
    torch's global generator, so DataLoader worker seeding makes it reproducible.
    """

    def __init__(self, cfg: TransformConfig, train: bool, flip_permutation: Optional[np.ndarray] = None):
        self.cfg = cfg
        self.train = train
        self.flip_permutation = None if flip_permutation is None else np.asarray(flip_permutation)
        self._erase = v2.RandomErasing(p=cfg.erase_prob, value=0) if train and cfg.erase_prob > 0 else None

    def __call__(self, image: Image.Image, keypoints: Optional[np.ndarray] = None
                 ) -> tuple[torch.Tensor, Optional[np.ndarray]]:
        cfg = self.cfg
        img = F.pil_to_tensor(image.convert("RGB"))
        img = tv_tensors.Image(img)
        kp = None
        vis = None
        if keypoints is not None:
            keypoints = np.asarray(keypoints, dtype=np.float32)
            kp = tv_tensors.KeyPoints(torch.from_numpy(keypoints[:, :2] + 0.5),
                                      canvas_size=tuple(img.shape[-2:]))
            vis = torch.from_numpy(keypoints[:, 2].copy())

        size = [cfg.height, cfg.width]
        img = F.resize(img, size, interpolation=_interp(cfg.interpolation), antialias=True)
        if kp is not None:
            kp = F.resize(kp, size)
            kp = tv_tensors.wrap(kp - 0.5, like=kp)

        if self.train:
            if cfg.flip_prob > 0 and torch.rand(()) < cfg.flip_prob:
                img = F.horizontal_flip(img)
                if kp is not None:
                    kp = F.horizontal_flip(kp)
                    if self.flip_permutation is not None:
                        perm = torch.from_numpy(self.flip_permutation)
                        kp = tv_tensors.wrap(kp[perm], like=kp)
                        vis = vis[perm]
            if cfg.pad > 0:
                img = F.pad(img, [cfg.pad], fill=0)
                top = int(torch.randint(0, 2 * cfg.pad + 1, ()))
                left = int(torch.randint(0, 2 * cfg.pad + 1, ()))
                img = F.crop(img, top, left, cfg.height, cfg.width)
                if kp is not None:
                    kp = F.pad(kp, [cfg.pad])
                    kp = F.crop(kp, top, left, cfg.height, cfg.width)

        out = F.to_dtype(img, torch.float32, scale=True)
        out = F.normalize(out, mean=list(cfg.mean), std=list(cfg.std))
        if self._erase is not None:
            out = self._erase(out)
        out = out.as_subclass(torch.Tensor)

        if kp is None:
            return out, None
        xy = kp.as_subclass(torch.Tensor).numpy().astype(np.float32)
        visible = vis.numpy().astype(np.float32)
        outside = (xy[:, 0] < -0.5) | (xy[:, 1] < -0.5) | (xy[:, 0] > cfg.width - 0.5) \
            | (xy[:, 1] > cfg.height - 0.5)
        visible[outside] = 0.0
        return out, np.concatenate([xy, visible[:, None]], axis=1)


def build_transforms(cfg: TransformConfig, flip_permutation: Optional[np.ndarray] = None
                     ) -> tuple[KeypointTransform, KeypointTransform]:
    """(train transform, test transform)."""
    return KeypointTransform(cfg, True, flip_permutation), KeypointTransform(cfg, False, flip_permutation)
