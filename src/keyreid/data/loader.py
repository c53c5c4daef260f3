"""Torch datasets over Sample lists: read images, apply keypoint-aware transforms, render heatmaps."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from keyreid.data.records import Sample
from keyreid.data.transforms import KeypointTransform
from keyreid.data.images import ImageReadError, read_image  # noqa: F401  (the one reader)
from keyreid.errors import DataError, ImageError, ImageTooLarge


def probe_image(path: str, decode: bool = False, list_bombs: bool = False
                ) -> tuple[Optional[tuple[int, int]], Optional[str]]:
    """((width, height), None) for a readable image, (None, problem) otherwise.

    Without `decode` only the header is read (cheap: what a dataset build can afford for every
    image; finds missing, empty and non-image files); with it the pixels are decoded too, which
    is what finds a truncated file. A decompression bomb (found from the header) raises
    ImageTooLarge: a caller that leaves out the unreadable images (on_error: skip) must not
    leave it out; `list_bombs` makes it a problem like the others, for a report that lists all.
    """
    from PIL.Image import DecompressionBombError

    from keyreid.data.images import _open, _too_large

    try:
        with _open(path) as im:   # the one reader's checks
            if decode:
                im.verify()  # structure / checksum errors
        if not decode:
            return im.size, None
        with _open(path) as im:
            im.load()  # verify() does not notice a truncated file
            return im.size, None
    except DecompressionBombError as e:  # some formats check again per frame, while decoding
        if not list_bombs:
            raise _too_large(path, e) from None
        return None, _too_large(path, e).problem
    except ImageTooLarge as e:
        if not list_bombs:
            raise
        return None, e.problem
    except ImageError as e:
        return None, e.problem
    except (OSError, SyntaxError, ValueError) as e:
        return None, f"unreadable or truncated image ({e})"


def probe_images(paths: Sequence[str], decode: bool = False, workers: Optional[int] = None,
                 list_bombs: bool = False) -> dict[str, tuple[Optional[tuple[int, int]], Optional[str]]]:
    """probe_image for many files. Decoding runs in threads (PIL decodes without holding the
    GIL); header reads stay in this thread, since parsing headers is Python code that threads
    only slow down (measured 4x slower in 8 threads than in one)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    paths = list(dict.fromkeys(paths))
    workers = workers or min(8, os.cpu_count() or 1)
    if not decode or len(paths) < 64 or workers == 1:
        return {p: probe_image(p, decode, list_bombs) for p in paths}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(paths, pool.map(lambda p: probe_image(p, decode, list_bombs), paths, chunksize=64)))


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
