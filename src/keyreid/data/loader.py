"""Torch datasets over Sample lists: read images, apply keypoint-aware transforms, render heatmaps."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset as TorchDataset

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


class ImageDataset(TorchDataset):
    """Items: dict(image [3,H,W], label, pid, camid, index, and keypoints [K,3] when the
    dataset has a skeleton; images without keypoints get all-invisible ones).

    An item may be requested as `index` or as `(index, seed)`: with a seed, the random
    augmentation of that item is a pure function of the seed (see PKBatchSampler(item_seeds=True)),
    so a resumed run, or a run with another number of workers, sees exactly the same batches.
    """

    def __init__(self, samples: Sequence[Sample], transform: KeypointTransform,
                 num_keypoints: int = 0, label_map: Optional[dict[int, int]] = None):
        self.samples = list(samples)
        self.transform = transform
        self.num_keypoints = num_keypoints
        self.label_map = label_map

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, request) -> dict:
        index, seed = request if isinstance(request, tuple) else (request, None)
        s = self.samples[index]
        image = read_image(s.path)
        kp = s.keypoints
        if kp is None and self.num_keypoints:
            kp = np.zeros((self.num_keypoints, 3), np.float32)  # unknown: all invisible
        if seed is None:
            tensor, kp = self.transform(image, kp)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
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
        return item
