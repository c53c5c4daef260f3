"""Market-1501 (Zheng et al., ICCV 2015).

Layout (release ``Market-1501-v15.09.15``)::

    <root>/bounding_box_train/0002_c1s1_000451_03.jpg   training images
    <root>/query/                                      query images
    <root>/bounding_box_test/                          gallery images (with distractors and junk)

`root` may be the release folder itself or its parent holding ``Market-1501-v15.09.15/``.
File names are ``PPPP_cCsS_FFFFFF_NN.jpg``: pid (4 digits, or ``-1``), camera C (1-6),
sequence S, frame F, bounding-box index NN. Sample.camid is C - 1 (the protocol's id),
Sample.camera is C (what users see, README "Cameras"); meta holds ``seq``, ``frame`` and ``box``.

pid -1 (junk: bad detections) is dropped everywhere; pid 0 (distractors) is kept in the gallery
as a negative and dropped from train and query (a distractor query has no true match).
Sample.pid keeps the original pid; use ``base.relabel`` for 0..N-1 training labels.

Official numbers after dropping junk (torchreid / fast-reid print the same):
train 751 ids / 12,936 images, query 750 / 3,368, gallery 751 (750 + the distractor pid 0) /
15,913 (19,732 files in bounding_box_test minus 3,819 junk); 6 cameras in every split.

Options: ``on_error`` ("raise" or "skip"), ``keypoints`` (a keyreid sidecar to attach),
``num_cameras`` (camera numbers accepted in names, default 6; for synthetic trees).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

from keyreid.data.datasets.base import (Dataset, ProblemLog, list_images, register_dataset,
                                        require_dir)
from keyreid.data.records import Sample
from keyreid.errors import DataError

RELEASE_DIR = "Market-1501-v15.09.15"
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
NAME_PATTERN = re.compile(r"^(-1|\d{4})_c(\d)s(\d+)_(\d{6})_(\d{2})\.(?:jpe?g|png)$", re.IGNORECASE)
NAME_FORMAT = "PPPP_cCsS_FFFFFF_NN.jpg"

OFFICIAL_COUNTS = {
    "train": {"ids": 751, "images": 12936, "cameras": 6},
    "query": {"ids": 750, "images": 3368, "cameras": 6},
    "gallery": {"ids": 751, "images": 15913, "cameras": 6},
}

# A name parser returns (pid, camera number as written, meta) or raises ValueError(reason).
NameParser = Callable[[str], "tuple[int, int, dict]"]


def find_root(root: str | Path, release_dirs: tuple[str, ...], marker: str, what: str) -> Path:
    """The folder holding `marker`: `root` itself or one of `release_dirs` inside it."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(root, f"dataset root does not exist or is not a folder ({what})")
    for cand in (root, *(root / d for d in release_dirs)):
        if (cand / marker).exists():
            return cand.resolve()
    inside = " or ".join(f"{d}/" for d in release_dirs)
    raise DataError(root, f"not a {what} root: expected {marker} here"
                          + (f" or inside {inside}" if release_dirs else ""))


def parse_named_folders(data_root: Path, split_dirs: dict[str, str], parse: NameParser,
                        name_format: str, log: ProblemLog) -> dict[str, list[Sample]]:
    """Parse the Market/Duke style layout: one folder per split, labels in the file names."""
    out: dict[str, list[Sample]] = {}
    folders = {split: require_dir(data_root / d, f"{split} images, {d}/")
               for split, d in split_dirs.items()}
    for split, folder in folders.items():
        samples = []
        for path in list_images(folder):
            try:
                pid, cam, meta = parse(path.name)
            except ValueError as e:
                log.report(path, f"malformed file name ({e}); expected {name_format}")
                continue
            if pid == -1:
                continue  # junk detection
            if pid == 0 and split != "gallery":
                continue  # distractors only make sense as gallery negatives
            samples.append(Sample(path=str(path), pid=pid, camid=cam - 1, split=split, meta=meta,
                                  camera=cam))
        out[split] = samples
    return out


def finish(name: str, data_root: Path, splits: dict[str, list[Sample]], log: ProblemLog,
           keypoints: Optional[str | Path] = None, **extra) -> Dataset:
    ds = Dataset(name=name, root=data_root, train=splits["train"], query=splits["query"],
                 gallery=splits["gallery"], problems=log.problems, **extra)
    if keypoints is not None:
        ds.attach_keypoints(keypoints)
    return ds


def _market_parser(num_cameras: int) -> NameParser:
    def parse(filename: str):
        m = NAME_PATTERN.match(filename)
        if m is None:
            raise ValueError("does not match the naming scheme")
        pid, cam = int(m.group(1)), int(m.group(2))
        if not 1 <= cam <= num_cameras:
            raise ValueError(f"camera {cam} outside 1..{num_cameras}")
        return pid, cam, {"seq": int(m.group(3)), "frame": int(m.group(4)), "box": int(m.group(5))}

    return parse


@register_dataset("market1501")
def market1501(root: str | Path, on_error: str = "raise", keypoints: Optional[str | Path] = None,
               num_cameras: int = 6) -> Dataset:
    """Parse Market-1501 (see the module docstring for layout, labels and official counts)."""
    log = ProblemLog(on_error)
    data_root = find_root(root, (RELEASE_DIR,), SPLIT_DIRS["train"], "Market-1501")
    splits = parse_named_folders(data_root, SPLIT_DIRS, _market_parser(num_cameras),
                                 NAME_FORMAT, log)
    return finish("market1501", data_root, splits, log, keypoints)
