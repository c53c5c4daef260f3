"""From a config to what training needs: samples, keypoints, a validation split, transforms."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from keyreid.config import Config
from keyreid.data.datasets import Dataset, build_dataset
from keyreid.data.datasets.base import relabel
from keyreid.data.keypoints import Skeleton, get_skeleton
from keyreid.data.records import Sample
from keyreid.data.transforms import KeypointTransform, TransformConfig, build_transforms


@dataclass
class PreparedData:
    dataset: Dataset
    train: list[Sample]
    val_query: list[Sample]
    val_gallery: list[Sample]
    label_map: dict[int, int]
    skeleton: Optional[Skeleton]


def default_sidecar(cfg: Config) -> Optional[Path]:
    if cfg.data.sidecar:
        return Path(cfg.data.sidecar)
    candidate = Path(cfg.data.root) / "keypoints.jsonl"
    return candidate if candidate.is_file() else None


def split_validation(train: list[Sample], fraction: float, seed: int
                     ) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Hold out a fraction of training identities: one query per held-out identity (from its
    most frequent camera) and the rest of its images as gallery. Never touches the test set."""
    if fraction <= 0:
        return train, [], []
    pids = sorted({s.pid for s in train})
    rng = np.random.default_rng(seed)
    n_val = max(2, int(round(fraction * len(pids))))
    if n_val >= len(pids):
        raise ValueError(f"val_identities={fraction} leaves no training identity")
    val = set(rng.choice(pids, size=n_val, replace=False).tolist())
    kept = [s for s in train if s.pid not in val]
    query, gallery = [], []
    for pid in sorted(val):
        items = [s for s in train if s.pid == pid]
        q = items[int(rng.integers(len(items)))]
        for s in items:
            moved = Sample(s.path, s.pid, s.camid, "query" if s is q else "gallery", s.keypoints, s.bbox)
            (query if s is q else gallery).append(moved)
    return kept, query, gallery


def prepare_data(cfg: Config, need_keypoints: bool) -> PreparedData:
    dataset = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.options)
    sidecar = default_sidecar(cfg)
    if sidecar is not None:
        dataset.attach_keypoints(sidecar, min_confidence=cfg.data.min_keypoint_confidence,
                                 require_all=False)
    skeleton = get_skeleton(dataset.skeleton) if dataset.skeleton else None
    if need_keypoints and not any(s.keypoints is not None for s in dataset.train):
        raise ValueError(f"head {cfg.model.head!r} needs keypoints but no training image of "
                         f"{cfg.data.root} has any: give data.sidecar (`keyreid keypoints estimate`)")
    train, val_q, val_g = split_validation(dataset.train, cfg.data.val_identities, cfg.seed)
    return PreparedData(dataset, train, val_q, val_g, relabel(train)[1], skeleton)


def make_transforms(cfg: Config, skeleton: Optional[Skeleton], mean=None, std=None
                    ) -> tuple[KeypointTransform, KeypointTransform]:
    """(train, test) transforms; mean/std: the normalisation the backbone's weights expect."""
    tcfg = TransformConfig(height=cfg.data.height, width=cfg.data.width, flip_prob=cfg.data.flip_prob,
                           pad=cfg.data.pad, erase_prob=cfg.data.erase_prob)
    if mean is not None:
        tcfg.mean, tcfg.std = tuple(mean), tuple(std)
    return build_transforms(tcfg, skeleton.flip_permutation() if skeleton is not None else None)
