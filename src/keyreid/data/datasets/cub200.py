"""CUB-200-2011 (Wah et al., 2011) for deep metric learning, with its 15 part annotations.

Layout (release ``CUB_200_2011``)::

    <root>/images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg
    <root>/images.txt               <image_id> <path under images/>
    <root>/image_class_labels.txt   <image_id> <class_id 1..200>
    <root>/train_test_split.txt     ignored: the retrieval split goes by class
    <root>/bounding_boxes.txt       optional: <image_id> <x> <y> <width> <height>
    <root>/parts/parts.txt          optional: <part_id> <name>, 15 parts
    <root>/parts/part_locs.txt      optional: <image_id> <part_id> <x> <y> <visible>

`root` may also be the parent holding ``CUB_200_2011/``.

Retrieval protocol ("retrieval"): classes 1-100 train, classes 101-200 test; query and gallery
are both the test images (the evaluator leaves the query itself out). Sample.pid is the class
id as released (1-200), camid 0 for every image.

Keypoints: [15, 3] in the parts.txt order (the cub15 skeleton). The README defines x, y as "the
pixel location of the center of the part"; the annotations come from a web tool recording
click offsets from the image's top-left corner, i.e. 0-based pixel positions (MATLAB
re-packagings such as the cub_cleaned.mat of Kar et al. add 1 to make them 1-based). They are
therefore used unchanged as 0-based pixel-centre coordinates; ``part_offset`` is subtracted
from x and y if a copy is known to differ. Parts with visible 0 (written as 0 0 0) become
(0, 0, 0). Each image must have all 15 parts once part_locs.txt is there.
Bounding boxes are kept as released, (x, y, w, h) in the same pixel convention.

Official numbers: train 100 classes / 5,864 images, test (query = gallery) 100 / 5,924.

Options: ``on_error``, ``keypoints`` ("auto" | False | path of a keyreid sidecar),
``part_offset`` (default 0.0).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from keyreid.data.datasets.base import Dataset, ProblemLog, register_dataset, require_dir
from keyreid.data.datasets.market1501 import find_root
from keyreid.data.keypoints import CUB15
from keyreid.data.records import Sample
from keyreid.errors import DataError

RELEASE_DIRS = ("CUB_200_2011",)
TRAIN_CLASSES = range(1, 101)
NUM_PARTS = CUB15.num_keypoints

OFFICIAL_COUNTS = {
    "train": {"ids": 100, "images": 5864, "cameras": 1},
    "query": {"ids": 100, "images": 5924, "cameras": 1},
    "gallery": {"ids": 100, "images": 5924, "cameras": 1},
}


def read_table(path: Path, ncols: int, log: ProblemLog, types=None) -> list[tuple]:
    """Rows of a whitespace-separated text table; bad rows are reported with their line."""
    rows = []
    types = types or [int] + [str] * (ncols - 1)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != ncols:
            log.report(path, f"line {lineno}: expected {ncols} fields, got {len(parts)}")
            continue
        try:
            row = tuple(t(v) for t, v in zip(types, parts))
        except ValueError:
            log.report(path, f"line {lineno}: malformed value in {line.strip()!r}")
            continue
        rows.append((lineno, *row))
    return rows


def _read_parts(data_root: Path, images: dict[int, str], log: ProblemLog,
                offset: float) -> dict[int, np.ndarray]:
    names_path = data_root / "parts" / "parts.txt"
    if names_path.is_file():
        names = {}
        for lineno, line in enumerate(names_path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                pid, _, name = line.strip().partition(" ")
                names[pid] = name.strip().replace(" ", "_").lower()
        expected = {str(i + 1): n for i, n in enumerate(CUB15.keypoints)}
        if names != expected:
            log.report(names_path, f"part list differs from the 15 CUB parts {list(CUB15.keypoints)}")
    locs_path = data_root / "parts" / "part_locs.txt"
    arrays: dict[int, np.ndarray] = {}
    seen: dict[int, set[int]] = {}
    for lineno, img, part, x, y, vis in read_table(locs_path, 5, log,
                                                   [int, int, float, float, float]):
        where = f"line {lineno}"
        if img not in images:
            log.report(locs_path, f"{where}: unknown image id {img}")
            continue
        if not 1 <= part <= NUM_PARTS:
            log.report(locs_path, f"{where}: part id {part} outside 1..{NUM_PARTS}")
            continue
        if vis not in (0.0, 1.0):
            log.report(locs_path, f"{where}: visible must be 0 or 1, got {vis:g}")
            continue
        if not (math.isfinite(x) and math.isfinite(y)) or (vis and (x < 0 or y < 0)):
            log.report(locs_path, f"{where}: part {part} at ({x:g}, {y:g}) is out of range")
            continue
        kp = arrays.setdefault(img, np.zeros((NUM_PARTS, 3), dtype=np.float32))
        if vis:
            kp[part - 1] = (x - offset, y - offset, 1.0)
        seen.setdefault(img, set()).add(part)
    complete = {}
    for img in images:
        have = seen.get(img, set())
        if len(have) != NUM_PARTS:
            missing = sorted(set(range(1, NUM_PARTS + 1)) - have)
            log.report(locs_path, f"image id {img} ({images[img]}): missing part(s) {missing}")
            continue
        complete[img] = arrays[img]
    return complete


@register_dataset("cub200")
def cub200(root: str | Path, on_error: str = "raise", keypoints: "bool | str | Path" = "auto",
           part_offset: float = 0.0) -> Dataset:
    """Parse CUB-200-2011 with the class-disjoint retrieval split (see the module docstring)."""
    log = ProblemLog(on_error)
    data_root = find_root(root, RELEASE_DIRS, "images.txt", "CUB-200-2011")
    image_dir = require_dir(data_root / "images", "images/")
    labels_path = data_root / "image_class_labels.txt"
    if not labels_path.is_file():
        raise DataError(labels_path, "missing file; is the dataset root right?")
    images = {}
    for lineno, img, rel in read_table(data_root / "images.txt", 2, log):
        if not (image_dir / rel).is_file():
            log.report(image_dir / rel, f"listed in images.txt line {lineno} but missing")
            continue
        images[img] = rel
    labels = {}
    for lineno, img, cls in read_table(labels_path, 2, log, [int, int]):
        if not 1 <= cls <= 200:
            log.report(labels_path, f"line {lineno}: class {cls} outside 1..200")
            continue
        labels[img] = cls
    boxes = {}
    bbox_path = data_root / "bounding_boxes.txt"
    if bbox_path.is_file():
        for lineno, img, *box in read_table(bbox_path, 5, log, [int] + [float] * 4):
            if box[2] <= 0 or box[3] <= 0 or box[0] < 0 or box[1] < 0:
                log.report(bbox_path, f"line {lineno}: invalid box {box}")
                continue
            boxes[img] = tuple(box)
    for img in list(images):
        if img not in labels:
            log.report(labels_path, f"no class for image id {img} ({images[img]})")
            del images[img]
    parts = None
    if keypoints in (True, "auto") and (data_root / "parts" / "part_locs.txt").is_file():
        parts = _read_parts(data_root, images, log, part_offset)
    elif keypoints is True:
        raise DataError(data_root / "parts" / "part_locs.txt", "missing file (keypoints=True)")

    train, query, gallery = [], [], []
    for img in sorted(images):
        if parts is not None and img not in parts:
            continue  # reported above
        common = dict(path=str(image_dir / images[img]), pid=labels[img], camid=0,
                      bbox=boxes.get(img), keypoints=None if parts is None else parts[img])
        if labels[img] in TRAIN_CLASSES:
            train.append(Sample(split="train", meta={"image_id": img}, **common))
        else:
            query.append(Sample(split="query", meta={"image_id": img}, **common))
            gallery.append(Sample(split="gallery", meta={"image_id": img}, **common))
    ds = Dataset(name="cub200", root=data_root, train=train, query=query, gallery=gallery,
                 skeleton=CUB15.name if parts is not None else None, protocol="retrieval",
                 problems=log.problems)
    if keypoints not in (True, False, "auto"):
        ds.attach_keypoints(keypoints)
    return ds
