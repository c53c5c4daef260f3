"""From a config to what training needs: samples, keypoints, a validation split, transforms.

Everything here runs before the first step, so a data mistake costs seconds, not an epoch:
every image's header is read (a missing, empty or non-image file is found now, with
`on_error: skip` every image is decoded and the bad ones are left out and counted), a sidecar
that does not cover the training images is an error naming how many and which, and visible
keypoints outside their image are turned invisible with one message.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from keyreid.config import Config, ConfigError
from keyreid.data.datasets import Dataset, build_dataset
from keyreid.data.datasets.base import relabel
from keyreid.data.keypoints import Skeleton, get_skeleton
from keyreid.data.loader import probe_images
from keyreid.data.records import Sample
from keyreid.data.transforms import KeypointTransform, TransformConfig, build_transforms
from keyreid.errors import DataError

# More than this share of visible training keypoints outside their images means the sidecar's
# coordinates belong to other images (another size, another crop), not estimator overshoot.
MAX_OUTSIDE_SHARE = 0.5


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class PreparedData:
    dataset: Dataset
    train: list[Sample]
    val_query: list[Sample]
    val_gallery: list[Sample]
    label_map: dict[int, int]
    skeleton: Optional[Skeleton]
    skipped: int = 0  # items left out with on_error: skip (adapter problems + unreadable images)


def default_sidecar(cfg: Config) -> Optional[Path]:
    if cfg.data.sidecar:
        return Path(cfg.data.sidecar)
    candidate = Path(cfg.data.root) / "keypoints.jsonl"
    return candidate if candidate.is_file() else None


def split_validation(train: list[Sample], fraction: float, seed: int
                     ) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Hold out a fraction of training identities: one random query per held-out identity and
    the rest of its images as gallery. Never touches the test set.

    Data without camera ids (the folder adapter's meta["camera_known"] False) gets the same
    convention as its test split: the query camera 0, the gallery camera 1, so the protocol's
    same-camera removal does not remove every match."""
    if fraction <= 0:
        return train, [], []
    pids = sorted({s.pid for s in train})
    rng = np.random.default_rng(seed)
    n_val = max(2, int(round(fraction * len(pids))))
    if n_val >= len(pids):
        raise ConfigError(f"data.val_identities={fraction} holds out {n_val} of the {len(pids)} "
                          f"training identities and leaves none to train on; lower it")
    val = set(rng.choice(pids, size=n_val, replace=False).tolist())
    kept = [s for s in train if s.pid not in val]
    query, gallery = [], []
    for pid in sorted(val):
        items = [s for s in train if s.pid == pid]
        q = items[int(rng.integers(len(items)))]
        for s in items:
            is_query = s is q
            moved = replace(s, split="query" if is_query else "gallery")
            if s.meta.get("camera_known") is False:
                moved.camid = 0 if is_query else 1
            (query if is_query else gallery).append(moved)
    return kept, query, gallery


def _check_images(dataset: Dataset, skip: bool) -> tuple[dict, int]:
    """Read every image's header (and decode it when skipping, the only way to find a truncated
    file before a worker does). Returns ({path: (width, height)}, number of samples left out)."""
    splits = ("train", "query", "gallery")
    paths = [s.path for split in splits for s in getattr(dataset, split)]
    results = probe_images(paths, decode=skip)
    bad = {p: problem for p, (_, problem) in results.items() if problem is not None}
    if bad and not skip:
        first = next(iter(bad))
        raise DataError(None, f"{len(bad)} unreadable image(s) in {dataset.root}, first: {first}: "
                              f"{bad[first]}; `keyreid datasets check` lists them all, "
                              f"data.options.on_error=skip leaves them out")
    left_out = 0
    for split in splits:
        items = getattr(dataset, split)
        kept = [s for s in items if s.path not in bad]
        left_out += len(items) - len(kept)
        setattr(dataset, split, kept)
    dataset.problems.extend(f"{p}: {problem}" for p, problem in bad.items())
    return {p: size for p, (size, _) in results.items() if size is not None}, left_out


def _attach_sidecar(dataset: Dataset, sidecar: Path, cfg: Config, need_keypoints: bool,
                    notify: Callable[[str], None]) -> None:
    """Attach the sidecar; for a keypoint head every training image must have an entry unless
    data.allow_missing_keypoints says otherwise."""
    dataset.attach_keypoints(sidecar, min_confidence=cfg.data.min_keypoint_confidence,
                             require_all=False)
    if not need_keypoints:
        return
    cov = dataset.keypoint_coverage
    missing = cov.missing.get("train", [])
    total = len(dataset.train)
    if not missing:
        return
    if len(missing) == total:  # keys and images do not meet at all: never a choice
        raise DataError(None, cov.describe_missing(missing, total, "training images", dataset.root))
    what = (f"{len(missing)} of {total} training images have no entry in {sidecar} "
            f"(first: {', '.join(missing[:3])})")
    if not cfg.data.allow_missing_keypoints:
        raise DataError(None, f"{what}; `keyreid keypoints estimate` with -o {sidecar} fills in "
                              f"the missing ones, or set data.allow_missing_keypoints=true to "
                              f"train them with every keypoint invisible")
    notify(f"warning: {what}; they train with every keypoint invisible "
           f"(data.allow_missing_keypoints=true)")


def _hide_outside_keypoints(samples: list[Sample], sizes: dict, notify: Callable[[str], None]) -> None:
    """Visible keypoints outside their image (estimators extrapolate cut-off limbs) become
    invisible, counted in one message; when most are outside the coordinates are for other
    images, which is an error."""
    visible = outside = images = 0
    first = None
    for s in samples:
        if s.keypoints is None or s.path not in sizes:
            continue
        w, h = sizes[s.path]
        kp = s.keypoints
        vis = kp[:, 2] > 0
        out = vis & ((kp[:, 0] < -0.5) | (kp[:, 1] < -0.5) | (kp[:, 0] > w - 0.5) | (kp[:, 1] > h - 0.5))
        visible += int(vis.sum())
        if out.any():
            i = int(np.flatnonzero(out)[0])
            first = first or f"{s.path} keypoint {i} at ({kp[i, 0]:g}, {kp[i, 1]:g}) in a {w}x{h} image"
            outside += int(out.sum())
            images += 1
            s.keypoints = kp.copy()
            s.keypoints[out, 2] = 0.0
    if not outside:
        return
    what = (f"{outside} of {visible} visible keypoints of the training images ({images} images) lie "
            f"outside their image, first: {first}")
    if outside > MAX_OUTSIDE_SHARE * visible:
        raise DataError(None, f"{what}: the keypoints do not fit these images (made for another "
                              f"size or crop?); `keyreid keypoints check` shows them")
    notify(f"note: {what}; they count as invisible")


def prepare_data(cfg: Config, need_keypoints: bool,
                 notify: Callable[[str], None] = _stderr, needed_by: Optional[str] = None) -> PreparedData:
    """Build the dataset, check its images and keypoints, and carve the validation split.

    notify: where warnings and notes go (one line each; stderr by default). needed_by: what needs
    the keypoints, for the error when none has any (default: the config's model.head)."""
    options = dict(cfg.data.options)
    skip = options.get("on_error", "raise") == "skip"
    dataset = build_dataset(cfg.data.dataset, cfg.data.root, **options)
    adapter_skipped = len(dataset.problems)
    sizes, unreadable = _check_images(dataset, skip)
    if skip and (adapter_skipped or unreadable):
        notify(f"skipped {adapter_skipped + unreadable} item(s) of {cfg.data.root} "
               f"(data.options.on_error=skip): {unreadable} unreadable image(s), {adapter_skipped} "
               f"other problem(s); first: {dataset.problems[0]}")
    sidecar = default_sidecar(cfg)
    if sidecar is not None:
        _attach_sidecar(dataset, sidecar, cfg, need_keypoints, notify)
    skeleton = get_skeleton(dataset.skeleton) if dataset.skeleton else None
    if need_keypoints and not any(s.keypoints is not None for s in dataset.train):
        who = needed_by or f"model.head={cfg.model.head!r}"
        raise ConfigError(f"{who} needs keypoints but no training image of "
                          f"{cfg.data.root} has any: give data.sidecar (`keyreid keypoints estimate`)")
    if need_keypoints:
        _hide_outside_keypoints(dataset.train, sizes, notify)
    train, val_q, val_g = split_validation(dataset.train, cfg.data.val_identities, cfg.seed)
    return PreparedData(dataset, train, val_q, val_g, relabel(train)[1], skeleton,
                        skipped=adapter_skipped + unreadable)


def make_transforms(cfg: Config, skeleton: Optional[Skeleton], mean=None, std=None
                    ) -> tuple[KeypointTransform, KeypointTransform]:
    """(train, test) transforms; mean/std: the normalisation the backbone's weights expect."""
    tcfg = TransformConfig(height=cfg.data.height, width=cfg.data.width, flip_prob=cfg.data.flip_prob,
                           pad=cfg.data.pad, erase_prob=cfg.data.erase_prob)
    if mean is not None:
        tcfg.mean, tcfg.std = tuple(mean), tuple(std)
    return build_transforms(tcfg, skeleton.flip_permutation() if skeleton is not None else None)
