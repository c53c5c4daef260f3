"""Torch datasets over Sample lists: read images, apply keypoint-aware transforms, render heatmaps."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset as TorchDataset

from keyreid.data.keypoints import render_heatmaps
from keyreid.data.records import Sample
from keyreid.data.transforms import KeypointTransform
from keyreid.errors import DataError


def read_image(path: str) -> Image.Image:
    """Open and fully decode an image, or raise DataError naming the file and the problem."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not in a worker later
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except UnidentifiedImageError:
        raise DataError(path, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"cannot decode image ({e})") from None


def relabel(pids: Sequence[int]) -> dict[int, int]:
    """Map the training identities to 0..N-1 in sorted order (classifier labels)."""
    return {pid: i for i, pid in enumerate(sorted(set(int(p) for p in pids)))}


class ImageDataset(TorchDataset):
    """Items: dict(image [3,H,W], label, pid, camid, index, and with keypoints: keypoints [K,3],
    heatmaps [K,h,w] at `heatmap_stride`, heatmap_weights [K])."""

    def __init__(self, samples: Sequence[Sample], transform: KeypointTransform,
                 num_keypoints: int = 0, heatmap_stride: Optional[int] = None,
                 heatmap_sigma: float = 2.0, label_map: Optional[dict[int, int]] = None):
        self.samples = list(samples)
        self.transform = transform
        self.num_keypoints = num_keypoints
        self.heatmap_stride = heatmap_stride
        self.heatmap_sigma = heatmap_sigma
        self.label_map = label_map

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        image = read_image(s.path)
        kp = s.keypoints
        if kp is None and self.num_keypoints:
            kp = np.zeros((self.num_keypoints, 3), np.float32)  # unknown: all invisible
        tensor, kp = self.transform(image, kp)
        item = {
            "image": tensor,
            "label": self.label_map[s.pid] if self.label_map is not None else s.pid,
            "pid": s.pid,
            "camid": s.camid,
            "index": index,
        }
        if kp is not None:
            item["keypoints"] = torch.from_numpy(kp)
            if self.heatmap_stride:
                h, w = tensor.shape[-2:]
                maps, weights = render_heatmaps(kp, (h, w), self.heatmap_stride, self.heatmap_sigma)
                item["heatmaps"] = torch.from_numpy(maps)
                item["heatmap_weights"] = torch.from_numpy(weights)
        return item
