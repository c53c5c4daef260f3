"""Stanford Cars / Cars196 (Krause et al., 3dRR 2013) for deep metric learning.

Layout (the "all images" release)::

    <root>/car_ims/000001.jpg ... 016185.jpg
    <root>/cars_annos.mat

``cars_annos.mat`` holds a 1 x N struct array ``annotations`` with fields ``relative_im_path``
(``car_ims/000001.jpg``, relative to root), ``bbox_x1``, ``bbox_y1``, ``bbox_x2``, ``bbox_y2``,
``class`` (1-196) and ``test`` (the classification split flag, kept in meta["test"] and ignored
here), read with scipy.io.loadmat.

Retrieval protocol ("retrieval"): classes 1-98 train, 99-196 test; query = gallery = the test
images. Sample.pid is the class id as released, camid 0 for every image.
The devkit is MATLAB and its boxes are 1-based inclusive pixel indices, so Sample.bbox is
(x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1) in 0-based pixels.

Official numbers: train 98 classes / 8,054 images, test (query = gallery) 98 / 8,131.

Options: ``on_error``, ``keypoints`` (path of a keyreid sidecar to attach).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from keyreid.data.datasets.base import Dataset, ProblemLog, register_dataset
from keyreid.data.datasets.market1501 import find_root
from keyreid.data.records import Sample
from keyreid.errors import DataError

RELEASE_DIRS = ("stanford_cars", "cars196", "CARS196")
ANNOTATION_FILE = "cars_annos.mat"
FIELDS = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
TRAIN_CLASSES = range(1, 99)

OFFICIAL_COUNTS = {
    "train": {"ids": 98, "images": 8054, "cameras": 1},
    "query": {"ids": 98, "images": 8131, "cameras": 1},
    "gallery": {"ids": 98, "images": 8131, "cameras": 1},
}


def _scalar(value):
    """Unwrap loadmat's nested 1x1 arrays into a Python scalar or string."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            if value.dtype.kind in "US" and value.size == 0:
                return ""
            raise ValueError(f"expected one value, got shape {value.shape}")
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode()
    return value.item() if isinstance(value, np.generic) else value


def read_annotations(mat_path: Path) -> list[dict]:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(mat_path))
    except Exception as e:  # scipy raises several types for corrupt files
        raise DataError(mat_path, f"cannot read the MATLAB file ({type(e).__name__}: {e})") from None
    if "annotations" not in mat:
        raise DataError(mat_path, "no 'annotations' struct array in the file")
    ann = np.asarray(mat["annotations"]).reshape(-1)
    names = ann.dtype.names or ()
    missing = [f for f in FIELDS if f not in names]
    if missing:
        raise DataError(mat_path, f"'annotations' lacks field(s) {missing}")
    return [{f: rec[f] for f in FIELDS} for rec in ann]


@register_dataset("cars196")
def cars196(root: str | Path, on_error: str = "raise",
            keypoints: Optional[str | Path] = None) -> Dataset:
    """Parse Cars196 with the class-disjoint retrieval split (see the module docstring)."""
    log = ProblemLog(on_error)
    data_root = find_root(root, RELEASE_DIRS, ANNOTATION_FILE, "Cars196")
    mat_path = data_root / ANNOTATION_FILE
    records = read_annotations(mat_path)
    train, query, gallery = [], [], []
    for i, rec in enumerate(records, start=1):
        where = f"annotation {i}"
        try:
            rel = str(_scalar(rec["relative_im_path"]))
            x1, y1, x2, y2 = (float(_scalar(rec[k])) for k in FIELDS[1:5])
            cls, test = int(_scalar(rec["class"])), int(_scalar(rec["test"]))
        except (ValueError, TypeError) as e:
            log.report(mat_path, f"{where}: malformed record ({e})")
            continue
        path = data_root / rel
        if not path.is_file():
            log.report(path, f"{where} in {ANNOTATION_FILE}: image missing")
            continue
        if not 1 <= cls <= 196:
            log.report(mat_path, f"{where} ({rel}): class {cls} outside 1..196")
            continue
        if x2 < x1 or y2 < y1 or x1 < 1 or y1 < 1:
            log.report(mat_path, f"{where} ({rel}): invalid box ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
            continue
        common = dict(path=str(path), pid=cls, camid=0,
                      bbox=(x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1))
        meta = {"test": test}
        if cls in TRAIN_CLASSES:
            train.append(Sample(split="train", meta=meta, **common))
        else:
            query.append(Sample(split="query", meta=dict(meta), **common))
            gallery.append(Sample(split="gallery", meta=dict(meta), **common))
    ds = Dataset(name="cars196", root=data_root, train=train, query=query, gallery=gallery,
                 protocol="retrieval", problems=log.problems)
    if keypoints is not None:
        ds.attach_keypoints(keypoints)
    return ds
