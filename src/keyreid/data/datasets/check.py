"""Check a dataset tree and list every problem at once.

`check_dataset` parses the tree with the adapter in skip mode (so one bad file does not hide
the next), then opens every image with PIL (a header check and a full decode, which is what
catches truncated files), checks keypoints and boxes against the image sizes, reports an empty
query or gallery split, and compares the counts with the official numbers the adapter module
documents in OFFICIAL_COUNTS. Counts that differ are information (a subset, the synthetic
benchmark), not problems, unless the official release is required (expect_official=True).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from keyreid.data.datasets.base import DATASETS, Dataset, build_dataset
from keyreid.data.keypoints import get_skeleton, validate_keypoints
from keyreid.data.loader import probe_images
from keyreid.errors import DataError


@dataclass
class CheckReport:
    """What check_dataset found. `ok` is True when there is no problem."""

    name: str
    root: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    official: Optional[dict[str, dict[str, int]]] = None
    problems: list[str] = field(default_factory=list)
    images_checked: int = 0
    dataset: Optional[Dataset] = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def mismatches(self) -> list[tuple[str, str, int, int]]:
        """(split, key, found, official) for every count that differs from the official one."""
        out = []
        for split, keys in (self.official or {}).items():
            for key, want in keys.items():
                got = self.counts.get(split, {}).get(key)
                if got != want:
                    out.append((split, key, got, want))
        return out


def official_counts(name: str) -> Optional[dict[str, dict[str, int]]]:
    """The OFFICIAL_COUNTS of the module that registered `name` (None when it has none)."""
    if name not in DATASETS:
        return None
    fn = DATASETS.get(name)
    module = importlib.import_module(fn.__module__)
    return getattr(module, "OFFICIAL_COUNTS", None)


def _counts(ds: Dataset) -> dict[str, dict[str, int]]:
    counts = ds.summary()
    val = getattr(ds, "val", None)
    if val:  # MSMT17 with its validation list kept apart: official train includes it
        train = [*ds.train, *val]
        counts["train"] = {"ids": len({s.pid for s in train}), "images": len(train),
                           "cameras": len({s.camid for s in train})}
    return counts


def check_dataset(root: str | Path, name: str, expect_official: bool = False,
                  verify_images: bool = True, workers: Optional[int] = None,
                  **options) -> CheckReport:
    """Check the tree at `root` as dataset `name` and report all its problems.

    expect_official: report every count that differs from the adapter's OFFICIAL_COUNTS as a
    problem (for a full release); otherwise the differences are only information
    (CheckReport.mismatches()). verify_images: decode every image with PIL.
    `options` go to the adapter (its on_error is forced to "skip").
    """
    report = CheckReport(name=name, root=str(root))
    official = official_counts(name)
    options = {k: v for k, v in options.items() if k != "on_error"}
    try:
        ds = build_dataset(name, root, on_error="skip", **options)
    except DataError as e:
        report.problems.append(str(e))  # the layout itself is wrong: nothing more to check
        return report
    report.dataset = ds
    report.problems.extend(ds.problems)
    report.counts = _counts(ds)

    if verify_images:
        samples = [*ds.train, *ds.query, *ds.gallery, *getattr(ds, "val", [])]
        paths = list(dict.fromkeys(s.path for s in samples))
        results = probe_images(paths, decode=True, workers=workers, list_bombs=True)  # listed, never decoded
        report.images_checked = len(paths)
        for path in paths:
            if results[path][1] is not None:
                report.problems.append(f"{path}: {results[path][1]}")
        skeleton = get_skeleton(ds.skeleton) if ds.skeleton else None
        checked_kp: set[str] = set()
        for s in samples:
            size = results[s.path][0]
            if size is None or s.path in checked_kp:
                continue
            checked_kp.add(s.path)
            if s.keypoints is not None:
                k = skeleton.num_keypoints if skeleton else s.keypoints.shape[0]
                try:
                    validate_keypoints(s.keypoints, k, f"{s.path} (keypoints)", image_size=size)
                except DataError as e:
                    report.problems.append(str(e))
            if s.bbox is not None:
                x, y, w, h = s.bbox
                if x < 0 or y < 0 or x + w > size[0] + 0.5 or y + h > size[1] + 0.5:
                    report.problems.append(f"{s.path}: bounding box {tuple(s.bbox)} exceeds the "
                                           f"{size[0]}x{size[1]} image")

    for split in ("query", "gallery"):
        if not getattr(ds, split):
            report.problems.append(f"{root}: the {split} split is empty: there is nothing to "
                                   f"evaluate (check the layout or the adapter's options)")
    if expect_official and official is None:
        report.problems.append(f"dataset {name!r} has no official counts to compare with")
    if official is not None:
        report.official = official
        if expect_official:
            for split, key, got, want in report.mismatches():
                report.problems.append(f"{split}: {got} {key}, the official release has {want}")
    return report


__all__ = ["CheckReport", "check_dataset", "official_counts"]
