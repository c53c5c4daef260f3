"""Training pairs for the generators: which images go together, and how each is loaded.

An item is a dict of ROLES -> sample index, e.g. {"source": 3, "target": 5}; the methods' samplers
make the item lists and PairDataset loads every role the same way (resize, keypoints into the
generation skeleton, optional flip, pose maps, skeleton image, [-1, 1] range).

Flips are random per sample of an item but reproducible: whether sample s of item i is flipped is a
function of (seed, i, s) only, not of worker count, load order or earlier epochs, so a resumed run
loads exactly the same tensors. One sample that fills two roles of an item (FD-GAN's shared target
of a positive pair, a source that is its own target) is flipped the same way in both.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from keyreid.data.keypoints import Skeleton
from keyreid.data.loader import read_image
from keyreid.data.records import Sample
from keyreid.errors import DataError
from keyreid.generation.pose import (flip_keypoints, pose_maps, pose_skeleton, skeleton_image,
                                     to_unit_range)


def default_sigma(height: int) -> float:
    """Pose-map sigma in pixels: FD-GAN's 5 px at 256 px high, scaled with the image."""
    return 5.0 * height / 256


class PairDataset(Dataset):
    """Items are dicts of ROLES -> sample index; each role r yields r (image [3,H,W] in [-1,1]),
    r_kp ([K,3] pixels after resize/flip, in the generation skeleton), r_maps ([K,H,W] pose maps),
    r_skeleton ([3,H,W] skeleton image in [-1,1]), r_pid (int), r_index (int).

    skeleton: the skeleton of the samples' keypoints (coco17 for people); the generation skeleton
    is pose_skeleton(skeleton)[0] (OpenPose-18 for people), kept as `self.pose_skeleton`. Samples
    without keypoints get an all-missing pose. sigma None: default_sigma(height). maps / skeletons
    False leave out r_maps / r_skeleton for methods that do not use them (they cost CPU time).
    """

    def __init__(self, samples: Sequence[Sample], items: Sequence[dict[str, int]], skeleton: Skeleton,
                 height: int, width: int, sigma: Optional[float] = None, flip_prob: float = 0.0,
                 seed: int = 0, maps: bool = True, skeletons: bool = True,
                 thickness: Optional[float] = None):
        self.samples = list(samples)
        self.items = [dict(item) for item in items]
        for n, item in enumerate(self.items):
            bad = {r: i for r, i in item.items() if not 0 <= int(i) < len(self.samples)}
            if not item or bad:
                raise ValueError(f"pair item {n} {item} names no role or a sample index outside "
                                 f"0..{len(self.samples) - 1}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.data_skeleton = skeleton
        self.pose_skeleton, self.convert = pose_skeleton(skeleton)
        self.height, self.width = int(height), int(width)
        self.sigma = default_sigma(self.height) if sigma is None else float(sigma)
        self.flip_prob = float(flip_prob)
        self.seed = int(seed)
        self.maps, self.skeletons, self.thickness = maps, skeletons, thickness

    def __len__(self) -> int:
        return len(self.items)

    def flips(self, index: int) -> dict[int, bool]:
        """sample index -> flipped, for item `index` (a pure function of seed, index, sample)."""
        out = {}
        for s in set(self.items[index].values()):
            if self.flip_prob <= 0.0:
                out[s] = False
            else:
                rng = np.random.default_rng([self.seed, int(index), int(s)])
                out[s] = bool(rng.random() < self.flip_prob)
        return out

    def load(self, sample_index: int, flip: bool) -> dict:
        """The tensors of one sample (keys without the role prefix)."""
        s = self.samples[sample_index]
        image = read_image(s.path)
        w0, h0 = image.size
        if (w0, h0) != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.BILINEAR)
        k = self.data_skeleton.num_keypoints
        raw = np.zeros((k, 3), np.float32) if s.keypoints is None else s.keypoints
        if raw.shape != (k, 3):
            raise DataError(s.path, f"has {raw.shape[0]} keypoints, the {self.data_skeleton.name} "
                                    f"skeleton has {k}")
        kp = self.convert(raw)
        visible = kp[:, 2] > 0
        # pixel centres: x -> (x + 0.5) * W' / W - 0.5 (as keyreid.data.transforms resizes)
        kp[visible, 0] = (kp[visible, 0] + 0.5) * (self.width / w0) - 0.5
        kp[visible, 1] = (kp[visible, 1] + 0.5) * (self.height / h0) - 0.5
        pixels = np.asarray(image, dtype=np.uint8)
        if flip:
            pixels = pixels[:, ::-1]
            kp = flip_keypoints(kp, self.width, self.pose_skeleton)
        out = {"": to_unit_range(pixels), "_kp": torch.from_numpy(kp),
               "_pid": int(s.pid), "_index": int(sample_index)}
        if self.maps:
            out["_maps"] = torch.from_numpy(pose_maps(kp, self.height, self.width, self.sigma))
        if self.skeletons:
            out["_skeleton"] = to_unit_range(skeleton_image(kp, self.pose_skeleton, self.height,
                                                            self.width, self.thickness))
        return out

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        flips = self.flips(index)
        loaded = {s: self.load(s, flips[s]) for s in sorted(set(item.values()))}
        out = {}
        for role, s in item.items():
            for suffix, value in loaded[s].items():
                out[role + suffix] = value
        return out


# ------------------------------------------------------------------------------------ samplers

def _groups(pids: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(pids):
        groups[int(p)].append(i)
    return dict(groups)


def same_identity_pairs(pids: Sequence[int], seed: int, max_pairs: Optional[int] = None) -> list[dict]:
    """Every ordered pair (i, j), i != j, of images of one identity as {"source": i, "target": j}
    (PN-GAN), in index order; with max_pairs, a subsample of that many drawn with `seed`."""
    pairs = [{"source": i, "target": j}
             for members in _groups(pids).values() for i in members for j in members if i != j]
    pairs.sort(key=lambda p: (p["source"], p["target"]))
    if max_pairs is not None and max_pairs < len(pairs):
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max(0, max_pairs),
                                                          replace=False))
        pairs = [pairs[k] for k in keep]
    return pairs


def _other(rng: np.random.Generator, members: list[int], exclude: set[int]) -> int:
    """A random member not in `exclude`, or -1 when there is none."""
    pool = [m for m in members if m not in exclude]
    return int(pool[rng.integers(len(pool))]) if pool else -1


def fdgan_pairs(pids: Sequence[int], seed: int, negatives_per_positive: int = 3,
                max_anchors: Optional[int] = None) -> list[dict]:
    """FD-GAN's pairs: per anchor a, one positive pair and `negatives_per_positive` negatives, as
    {"a", "b", "target_a", "target_b"} sample indices.

    b: positive, another image of a's identity (a itself only when the identity has one image);
    negative, an image of another identity (uniform over those images). target_a: another image of
    a's identity (for the positive pair also other than b when the identity has a third image); a
    itself only for a one-image identity. target_b: target_a for the positive pair (same identity,
    same target pose, so the two generated images should agree); for a negative, another image of
    b's identity (b itself for a one-image identity).
    Anchors are all images, or a seeded subsample of max_anchors, in index order.
    """
    pids = [int(p) for p in pids]
    groups = _groups(pids)
    if len(groups) < 2 and negatives_per_positive > 0:
        raise ValueError("fdgan_pairs needs at least two identities for negative pairs")
    rng = np.random.default_rng(seed)
    anchors = np.arange(len(pids))
    if max_anchors is not None and max_anchors < len(anchors):
        anchors = np.sort(rng.choice(len(anchors), size=max(0, max_anchors), replace=False))

    def partner(i: int, exclude: set[int]) -> int:
        members = groups[pids[i]]
        for ex in (exclude | {i}, {i}):
            j = _other(rng, members, ex)
            if j >= 0:
                return j
        return i

    items = []
    for a in map(int, anchors):
        b = partner(a, set())
        t = partner(a, {b})
        items.append({"a": a, "b": b, "target_a": t, "target_b": t})
        for _ in range(negatives_per_positive):
            while True:  # rejection: expected tries ~ 1 / (1 - share of a's identity)
                nb = int(rng.integers(len(pids)))
                if pids[nb] != pids[a]:
                    break
            items.append({"a": a, "b": nb, "target_a": partner(a, set()),
                          "target_b": partner(nb, set())})
    return items


def batch_is_same(batch: dict) -> torch.Tensor:
    """bool [B]: whether the pair of each fdgan item shows one identity (a_pid == b_pid)."""
    return torch.as_tensor(batch["a_pid"]) == torch.as_tensor(batch["b_pid"])
