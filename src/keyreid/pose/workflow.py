"""Estimate keypoints over a dataset (resumable), score them (PCK) and check a sidecar."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from keyreid.data.datasets.base import Dataset, relative_key
from keyreid.data.keypoints import SidecarAppender, get_skeleton, read_sidecar
from keyreid.errors import DataError
from keyreid.pose.estimators import PoseEstimator

SPLITS = ("train", "query", "gallery")


def dataset_images(ds: Dataset, splits: Sequence[str] = SPLITS) -> list[tuple[str, str]]:
    """(sidecar key, file path) of every image once, in split order (retrieval sets list their
    test images as both query and gallery)."""
    seen: dict[str, str] = {}
    for split in splits:
        for s in getattr(ds, split):
            seen.setdefault(relative_key(ds.root, s.path), s.path)
    return list(seen.items())


@dataclass
class EstimateSummary:
    images: int  # images this run was asked for
    already_done: int  # found in the sidecar from an earlier run, left untouched
    estimated: int  # estimated now
    no_person: int  # of those, with nobody found (stored with all-zero visibility)
    sidecar: str
    found: int = 0  # of all `images` (earlier runs included), with a person found
    implausible: int = 0  # estimated now, found, but failing pose.quality's checks (COCO-17)
    missing: list[str] = field(default_factory=list)  # images with nobody found, dataset order
    missing_file: Optional[str] = None  # the list above, one key per line, beside the sidecar
    # estimated now and implausible: (key, the check it failed), and where they are listed
    implausible_items: list = field(default_factory=list)
    implausible_file: Optional[str] = None

    @property
    def detection_rate(self) -> float:
        return self.found / self.images if self.images else float("nan")

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["detection_rate"] = self.detection_rate
        return out


def missing_list_path(sidecar: str | Path) -> Path:
    """Where estimate lists the images with nobody found: kp.jsonl -> kp.missing.txt."""
    sidecar = Path(sidecar)
    return sidecar.with_name(sidecar.stem + ".missing.txt")


def _implausible_entries(entries: Mapping[str, np.ndarray], items: Sequence[tuple[str, str]], skel
                         ) -> list[tuple[str, str]]:
    from keyreid.pose.quality import implausible_reason

    out = []
    for key, path in items:
        kp = entries.get(key)
        if kp is None or not (np.asarray(kp)[:, 2] > 0).any():
            continue
        why = implausible_reason(np.asarray(kp), *image_size(path))
        if why:
            out.append((key, why))
    return out


def implausible_list_path(sidecar: str | Path) -> Path:
    """Where estimate names the implausible skeletons: kp.jsonl -> kp.implausible.txt."""
    sidecar = Path(sidecar)
    return sidecar.with_name(sidecar.stem + ".implausible.txt")


def nobody_found(entries: Mapping[str, np.ndarray], keys: Optional[Sequence[str]] = None
                 ) -> list[str]:
    """Keys (of `keys`, default all entries, in that order) whose entry has nothing visible."""
    keys = list(entries) if keys is None else keys
    return [k for k in keys if k in entries and not (entries[k][:, 2] > 0).any()]


def estimate_dataset(ds: Dataset, sidecar: str | Path, estimator: PoseEstimator,
                     batch_size: Optional[int] = None, limit: Optional[int] = None,
                     splits: Sequence[str] = SPLITS, progress: bool = True) -> EstimateSummary:
    """Run `estimator` over the images of `ds` and append to `sidecar`, resuming a partial one.

    Images already in the sidecar are skipped and never rewritten; each batch is appended and
    flushed to disk only once fully estimated, so an interrupted run (exception, Ctrl-C, kill)
    loses at most the batch in flight and a rerun produces the same file as one uninterrupted
    run. limit: only the first N images (in split order), e.g. for a quick benchmark.
    At the end the images with nobody found (this run's and earlier runs') are listed, one key
    per line, in missing_list_path(sidecar).
    """
    from keyreid.data.loader import read_image
    from keyreid.pose.quality import implausible_reason
    from keyreid.utils.io import atomic_write_text
    from keyreid.utils.progress import progress_bar

    skel = estimator.skeleton
    if ds.skeleton is not None and ds.skeleton != skel.name:
        raise DataError(ds.root, f"dataset {ds.name!r} uses skeleton {ds.skeleton!r}; estimator "
                                 f"{estimator.name!r} predicts {skel.name!r}")
    items = dataset_images(ds, splits)
    if limit is not None:
        items = items[:limit]
    batch_size = batch_size or estimator.batch_size
    estimated = no_person = 0
    implausible: list[tuple[str, str]] = []
    with SidecarAppender(sidecar, skel) as out:
        todo = [(k, p) for k, p in items if k not in out.done]
        already = len(items) - len(todo)
        with progress_bar(progress) as bar:
            task = bar.add_task(f"keypoints ({estimator.name})", total=len(items), completed=already)
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                images = [read_image(p) for _, p in batch]
                results = estimator.estimate(images)
                if len(results) != len(batch):
                    raise RuntimeError(f"estimator {estimator.name!r} returned {len(results)} "
                                       f"results for {len(batch)} images")
                for (key, _), kp, image in zip(batch, results, images):
                    if kp is None:
                        kp = np.zeros((skel.num_keypoints, 3), np.float32)
                        no_person += 1
                    elif skel.name == "coco17" and (why := implausible_reason(kp, *image.size)):
                        implausible.append((key, why))
                    out.append(key, kp)
                out.flush()  # a batch is on disk before the next starts
                estimated += len(batch)
                bar.update(task, advance=len(batch),
                           info=f"nobody found in {no_person} of {estimated}")
    _, entries = read_sidecar(sidecar)
    keys = [k for k, _ in items]
    missing = nobody_found(entries, keys)
    missing_file = missing_list_path(sidecar)
    atomic_write_text(missing_file, "".join(k + "\n" for k in missing))
    # the list covers the whole sidecar (earlier runs' entries too: a resumed run must not drop
    # their names), from the images' headers; the count of this run stays `implausible`
    named = _implausible_entries(entries, items, skel) if skel.name == "coco17" else []
    implausible_file = implausible_list_path(sidecar)
    atomic_write_text(implausible_file, "".join(f"{k}\t{why}\n" for k, why in named))
    return EstimateSummary(len(items), already, estimated, no_person, str(sidecar),
                           found=len(items) - len(missing), implausible=len(implausible),
                           missing=missing, missing_file=str(missing_file),
                           implausible_items=named, implausible_file=str(implausible_file))


# --------------------------------------------------------------------------------------------
# PCK


@dataclass
class PCKResult:
    """PCK@threshold of predicted keypoints against reference keypoints.

    A reference keypoint counts when it is visible in the reference (v > 0) and its image has a
    reference box of positive size. It is correct when the prediction marks it visible (v > 0 and
    v >= min_confidence) and lies within threshold * box size of it, where box size is
    max(height, width) of the tight box around the image's visible reference keypoints.
    Images missing from the prediction count as all-wrong.
    """

    threshold: float
    skeleton: str
    overall: float  # correct / counted over all keypoints and images
    per_keypoint: dict[str, float]  # NaN where a keypoint is never visible in the reference
    counted: int
    correct: int
    images: int  # reference images scored
    missing: int  # of those, absent from the prediction
    detected: int  # of those, with at least one visible predicted keypoint
    overall_detected: float  # PCK over the detected images only
    skipped_images: int  # reference images without a usable box (< 2 distinct visible points)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _load(s) -> tuple[str, Mapping[str, np.ndarray]]:
    if isinstance(s, (str, Path)):
        return read_sidecar(s)
    return s  # already (skeleton name, entries)


def pck(pred_sidecar, true_sidecar, threshold: float = 0.1, min_confidence: float = 0.0,
        keys: Optional[Sequence[str]] = None) -> PCKResult:
    """PCK@threshold (see PCKResult) of `pred_sidecar` against `true_sidecar`.

    Both are sidecar paths or (skeleton name, entries) pairs as read_sidecar returns.
    keys: the images to score (default: every image of the prediction that the reference has,
    so a prediction over part of a dataset is scored on that part).
    """
    pred_name, pred = _load(pred_sidecar)
    true_name, true = _load(true_sidecar)
    if pred_name != true_name:
        raise DataError(None, f"skeletons differ: prediction {pred_name!r}, reference {true_name!r}")
    skel = get_skeleton(true_name)
    if keys is None:
        keys = sorted(k for k in pred if k in true)
    k_count = skel.num_keypoints
    counted = np.zeros(k_count, np.int64)
    correct = np.zeros(k_count, np.int64)
    det_counted = det_correct = 0
    images = missing = detected = skipped = 0
    for key in keys:
        gt = true.get(key)
        if gt is None:
            continue
        vis = gt[:, 2] > 0
        if not vis.any():
            continue
        pts = gt[vis, :2]
        size = float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])))
        if size <= 0:
            skipped += 1
            continue
        images += 1
        p = pred.get(key)
        if p is None:
            missing += 1
            hit = np.zeros(k_count, bool)
        else:
            pv = (p[:, 2] > 0) & (p[:, 2] >= min_confidence)
            dist = np.linalg.norm(p[:, :2] - gt[:, :2], axis=1)
            hit = pv & (dist <= threshold * size)
            if pv.any():
                detected += 1
                det_counted += int(vis.sum())
                det_correct += int((hit & vis).sum())
        counted += vis
        correct += hit & vis
    per = {name: (float(correct[i] / counted[i]) if counted[i] else float("nan"))
           for i, name in enumerate(skel.keypoints)}
    total, good = int(counted.sum()), int(correct.sum())
    return PCKResult(threshold=threshold, skeleton=skel.name,
                     overall=good / total if total else float("nan"), per_keypoint=per,
                     counted=total, correct=good, images=images, missing=missing,
                     detected=detected,
                     overall_detected=det_correct / det_counted if det_counted else float("nan"),
                     skipped_images=skipped)


# --------------------------------------------------------------------------------------------
# Sidecar check


@dataclass
class SidecarReport:
    sidecar: str
    skeleton: str
    entries: int
    empty_entries: int  # all-zero visibility (nobody found)
    visibility: dict[str, float]  # fraction of entries with the keypoint visible
    mean_confidence: dict[str, float]  # mean v over entries where it is visible
    dataset_images: Optional[int] = None
    missing: list[str] = field(default_factory=list)  # dataset images without an entry
    extra: list[str] = field(default_factory=list)  # entries that are not dataset images
    out_of_image: list[str] = field(default_factory=list)  # "path: keypoint (x, y) outside WxH"
    images_sized: int = 0  # entries whose image header was read
    pck: Optional[PCKResult] = None

    @property
    def coverage(self) -> Optional[float]:
        if self.dataset_images is None:
            return None
        return (self.dataset_images - len(self.missing)) / self.dataset_images if self.dataset_images else 1.0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.out_of_image


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header only (PIL opens lazily, no decoding)."""
    from keyreid.data.images import image_size

    return image_size(path)   # ImageReadError / ImageTooLarge (DataErrors) name the file


def check_sidecar(sidecar: str | Path, ds: Optional[Dataset] = None,
                  reference: Optional[str | Path] = None, threshold: float = 0.1,
                  min_confidence: float = 0.0) -> SidecarReport:
    """Coverage against a dataset, per-keypoint visibility, visible points outside their image
    (needs the dataset to find the images), and PCK against a reference sidecar when given."""
    name, entries = read_sidecar(sidecar)
    skel = get_skeleton(name)
    keys = sorted(entries)
    if keys:
        stack = np.stack([entries[k] for k in keys])
        visible = stack[:, :, 2] > 0
        vis_rate = visible.mean(axis=0)
        conf_sum = np.where(visible, stack[:, :, 2], 0).sum(axis=0)
        n_vis = visible.sum(axis=0)
        empty = int((~visible.any(axis=1)).sum())
    else:
        vis_rate = conf_sum = n_vis = np.zeros(skel.num_keypoints)
        empty = 0
    report = SidecarReport(
        sidecar=str(sidecar), skeleton=name, entries=len(keys), empty_entries=empty,
        visibility={n: float(vis_rate[i]) for i, n in enumerate(skel.keypoints)},
        mean_confidence={n: (float(conf_sum[i] / n_vis[i]) if n_vis[i] else float("nan"))
                         for i, n in enumerate(skel.keypoints)})
    if ds is not None:
        if ds.skeleton is not None and ds.skeleton != name:
            raise DataError(sidecar, f"sidecar skeleton {name!r} does not match dataset "
                                     f"{ds.name!r} ({ds.skeleton!r})")
        images = dict(dataset_images(ds))
        report.dataset_images = len(images)
        report.missing = sorted(k for k in images if k not in entries)
        report.extra = [k for k in keys if k not in images]
        for key in keys:
            if key not in images:
                continue
            kp = entries[key]
            vis = kp[:, 2] > 0
            if not vis.any():
                continue
            w, h = image_size(images[key])
            report.images_sized += 1
            x, y = kp[:, 0], kp[:, 1]
            bad = vis & ((x < -0.5) | (y < -0.5) | (x > w - 0.5) | (y > h - 0.5))
            for i in np.flatnonzero(bad):
                report.out_of_image.append(f"{key}: {skel.keypoints[i]} at ({x[i]:g}, {y[i]:g}) "
                                           f"outside {w}x{h}")
    if reference is not None:
        report.pck = pck((name, entries), reference, threshold=threshold,
                         min_confidence=min_confidence)
    return report

