"""VeRi-776 (Liu et al., ICME 2016), with the optional keypoint release (Wang et al., ICCV 2017).

Layout::

    <root>/image_train/0001_c001_00016450_0.jpg   <root>/name_train.txt
    <root>/image_query/                            <root>/name_query.txt
    <root>/image_test/      (the gallery)          <root>/name_test.txt
    <root>/test_track.txt                          optional: tracks of the test images
    <root>/keypoint_train.txt, keypoint_test.txt   optional: keypoint release (keypoint_query.txt
                                                   is used for the query when present, otherwise
                                                   keypoint_test.txt, which covers it)

`root` may also be the parent holding ``VeRi/``. Names are ``VVVV_cCCC_FFFFFFFF_N.jpg``:
vehicle id, camera (c001-c020), frame, index. Sample.camid = camera - 1, Sample.camera the
camera (README "Cameras"), meta holds ``frame``, ``index`` and, from the keypoint release,
``orientation`` (0-7). The name_*.txt lists decide which images belong to a split when present
(a listed file that is missing is a problem); without them the folder content is used.

test_track.txt: one track per line, all image names of the track (a leading token that is not
an image name, e.g. ``0002_c002:``, is taken as the track's name). ``VeRiDataset.tracks`` is the
list of tracks (each a list of image names), ``VeRiDataset.track_of`` maps an image name to its
track index, and gallery/query samples carry meta["track"].

Keypoint files: ``<image path> x1 y1 ... x20 y20 [orientation]`` per line, 20 points in the
order of the veri20 skeleton, matched to images by file name. ``-1 -1`` marks an absent point,
which becomes (0, 0, visibility 0); other points get visibility 1. Every image of a split must
have an entry once the file is there. ``keypoints=False`` ignores the files.

Official numbers: train 576 ids / 37,778 images, query 200 / 1,678, gallery 200 / 11,579;
20 cameras in train.

Options: ``on_error``, ``keypoints`` ("auto": read the release files when present; False: never;
or a path to a keyreid sidecar to attach instead).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from keyreid.data.datasets.base import (Dataset, ProblemLog, list_images, register_dataset,
                                        require_dir)
from keyreid.data.datasets.market1501 import find_root
from keyreid.data.keypoints import VERI20
from keyreid.data.records import Sample
from keyreid.errors import DataError

RELEASE_DIRS = ("VeRi", "VeRi-776", "VeRi776")
SPLITS = {"train": ("image_train", "name_train.txt"), "query": ("image_query", "name_query.txt"),
          "gallery": ("image_test", "name_test.txt")}
KEYPOINT_FILES = {"train": ("keypoint_train.txt",),
                  "query": ("keypoint_query.txt", "keypoint_test.txt"),
                  "gallery": ("keypoint_test.txt",)}
NAME_PATTERN = re.compile(r"^(\d{4})_c(\d{3})_(\d{8})_(\d+)\.jpe?g$", re.IGNORECASE)
NAME_FORMAT = "VVVV_cCCC_FFFFFFFF_N.jpg"
NUM_CAMERAS = 20
NUM_KEYPOINTS = VERI20.num_keypoints

OFFICIAL_COUNTS = {
    "train": {"ids": 576, "images": 37778, "cameras": 20},
    "query": {"ids": 200, "images": 1678},
    "gallery": {"ids": 200, "images": 11579},
}


@dataclass
class VeRiDataset(Dataset):
    """VeRi-776 plus the test track table."""

    tracks: list[list[str]] = field(default_factory=list)
    track_of: dict[str, int] = field(default_factory=dict)


def _parse_name(name: str) -> tuple[int, int, dict]:
    m = NAME_PATTERN.match(name)
    if m is None:
        raise ValueError("does not match the naming scheme")
    cam = int(m.group(2))
    if not 1 <= cam <= NUM_CAMERAS:
        raise ValueError(f"camera {cam} outside 1..{NUM_CAMERAS}")
    return int(m.group(1)), cam, {"frame": int(m.group(3)), "index": int(m.group(4))}


def _split_names(data_root: Path, folder: Path, list_name: str, log: ProblemLog) -> list[Path]:
    list_path = data_root / list_name
    if not list_path.is_file():
        return list_images(folder)
    present = {p.name for p in folder.iterdir()}
    out = []
    for lineno, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name not in present:
            log.report(folder / name, f"listed in {list_name} line {lineno} but missing")
            continue
        out.append(folder / name)
    return out


def read_keypoint_file(path: Path, log: ProblemLog) -> dict[str, tuple[np.ndarray, Optional[int]]]:
    """{image file name: (keypoints float32 [20, 3], orientation or None)} of a release file."""
    out: dict[str, tuple[np.ndarray, Optional[int]]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {lineno}"
        nums = parts[1:]
        if len(nums) not in (2 * NUM_KEYPOINTS, 2 * NUM_KEYPOINTS + 1):
            log.report(path, f"{where}: expected an image path and {2 * NUM_KEYPOINTS} coordinates "
                             f"(+ orientation), got {len(nums)} numbers")
            continue
        try:
            values = [float(v) for v in nums]
        except ValueError:
            log.report(path, f"{where}: non-numeric value")
            continue
        if not all(math.isfinite(v) for v in values):
            log.report(path, f"{where}: NaN or infinite value")
            continue
        xy = np.asarray(values[:2 * NUM_KEYPOINTS], dtype=np.float64).reshape(NUM_KEYPOINTS, 2)
        absent = (xy == -1).all(axis=1)
        bad = ~absent & (xy < 0).any(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            log.report(path, f"{where}: keypoint {i + 1} at ({xy[i, 0]:g}, {xy[i, 1]:g}) is out of "
                             f"range (negative; only -1 -1 marks an absent point)")
            continue
        orientation = None
        if len(values) > 2 * NUM_KEYPOINTS:
            o = values[-1]
            if o != int(o) or not 0 <= o <= 7:
                log.report(path, f"{where}: orientation {o:g} is not an integer in 0..7")
                continue
            orientation = int(o)
        kp = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
        kp[~absent, :2] = xy[~absent]
        kp[~absent, 2] = 1.0
        name = Path(parts[0].replace("\\", "/")).name
        out[name] = (kp, orientation)
    return out


def read_tracks(path: Path, log: ProblemLog) -> list[list[str]]:
    tracks = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        tokens = line.split()
        if tokens and NAME_PATTERN.match(tokens[0]) is None:
            tokens = tokens[1:]  # a track label such as "0002_c002:"
        names = list(dict.fromkeys(tokens))
        if not names:
            continue
        bad = [t for t in names if NAME_PATTERN.match(t) is None]
        if bad:
            log.report(path, f"line {lineno}: {bad[0]!r} is not an image name ({NAME_FORMAT})")
            continue
        tracks.append(names)
    return tracks


@register_dataset("veri776")
def veri776(root: str | Path, on_error: str = "raise", keypoints: "bool | str | Path" = "auto"
            ) -> VeRiDataset:
    """Parse VeRi-776 (see the module docstring)."""
    log = ProblemLog(on_error)
    data_root = find_root(root, RELEASE_DIRS, "image_train", "VeRi-776")
    kp_cache: dict[str, Optional[dict]] = {}
    if keypoints is True and not (data_root / KEYPOINT_FILES["train"][0]).is_file():
        raise DataError(data_root / KEYPOINT_FILES["train"][0], "missing file (keypoints=True)")

    def keypoint_table(split: str):
        if keypoints is not True and keypoints != "auto":
            return None, None
        for fname in KEYPOINT_FILES[split]:
            if (data_root / fname).is_file():
                if fname not in kp_cache:
                    kp_cache[fname] = read_keypoint_file(data_root / fname, log)
                return fname, kp_cache[fname]
        return None, None

    splits: dict[str, list[Sample]] = {}
    for split, (dirname, list_name) in SPLITS.items():
        folder = require_dir(data_root / dirname, f"{split} images, {dirname}/")
        kp_name, kp_table = keypoint_table(split)
        samples = []
        for path in _split_names(data_root, folder, list_name, log):
            try:
                pid, cam, meta = _parse_name(path.name)
            except ValueError as e:
                log.report(path, f"malformed file name ({e}); expected {NAME_FORMAT}")
                continue
            kp = None
            if kp_table is not None:
                entry = kp_table.get(path.name)
                if entry is None:
                    log.report(data_root / kp_name, f"missing entry for {path.name} ({split})")
                    continue
                kp = entry[0].copy()
                if entry[1] is not None:
                    meta["orientation"] = entry[1]
            samples.append(Sample(path=str(path), pid=pid, camid=cam - 1, split=split,
                                  keypoints=kp, meta=meta, camera=cam))
        splits[split] = samples

    tracks: list[list[str]] = []
    track_of: dict[str, int] = {}
    if (data_root / "test_track.txt").is_file():
        tracks = read_tracks(data_root / "test_track.txt", log)
        for i, names in enumerate(tracks):
            for n in names:
                track_of[n] = i
        for s in (*splits["query"], *splits["gallery"]):
            t = track_of.get(Path(s.path).name)
            if t is not None:
                s.meta["track"] = t

    have_kp = any(s.keypoints is not None for ss in splits.values() for s in ss)
    ds = VeRiDataset(name="veri776", root=data_root, train=splits["train"], query=splits["query"],
                     gallery=splits["gallery"], skeleton=VERI20.name if have_kp else None,
                     problems=log.problems, tracks=tracks, track_of=track_of)
    if keypoints not in (True, False, "auto"):
        ds.attach_keypoints(keypoints)
    return ds
