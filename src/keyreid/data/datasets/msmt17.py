"""MSMT17 (Wei et al., CVPR 2018), versions V1 and V2 (V2: faces masked).

Layout::

    <root>/train/0000/0000_000_01_0303morning_0015_0.jpg     V1 image folders
    <root>/test/...
    <root>/mask_train_v2/..., <root>/mask_test_v2/...         V2 image folders (as released)
    <root>/list_train.txt, list_val.txt, list_query.txt, list_gallery.txt

`root` may also be the parent holding ``MSMT17_V1/`` or ``MSMT17_V2/``. The real V2 release
names its folders ``mask_train_v2``/``mask_test_v2``; some redistributed V2 copies use
``train``/``test``: both are accepted, whichever exists. Lines of the lists are
``<path relative to the image folder> <pid>``; train and val lists point into the train folder,
query and gallery lists into the test folder. The camera is the third ``_`` field of the file
name (01-15), Sample.camid = camera - 1, Sample.camera the camera (README "Cameras"). A listed
file that is missing is looked up with the other JPEG extension (.jpg/.jpeg) before it is
reported, since V2 copies differ there.

Training set: list_train + list_val by default (what the published numbers and fast-reid use);
``keep_val_separate=True`` keeps list_val out of train in ``MSMT17Dataset.val``.

Official numbers (V1; V2 has the same lists): train 1,041 ids / 32,621 images (30,248 from
list_train + 2,373 from list_val), query 3,060 / 11,659, gallery 3,060 / 82,161; 15 cameras.

Options: ``on_error``, ``keypoints`` (sidecar), ``keep_val_separate``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from keyreid.data.datasets.base import Dataset, ProblemLog, register_dataset
from keyreid.data.datasets.market1501 import find_root
from keyreid.data.records import Sample
from keyreid.errors import DataError

RELEASE_DIRS = ("MSMT17_V2", "MSMT17_V1", "MSMT17")
TRAIN_DIRS = ("train", "mask_train_v2")
TEST_DIRS = ("test", "mask_test_v2")
NUM_CAMERAS = 15

OFFICIAL_COUNTS = {
    "train": {"ids": 1041, "images": 32621, "cameras": 15},
    "query": {"ids": 3060, "images": 11659, "cameras": 15},
    "gallery": {"ids": 3060, "images": 82161, "cameras": 15},
}


@dataclass
class MSMT17Dataset(Dataset):
    """MSMT17 plus the validation list when it is kept separate (empty otherwise)."""

    val: list[Sample] = field(default_factory=list)
    version: str = "V1"


def _pick_dir(data_root: Path, names: tuple[str, ...], what: str) -> Path:
    for n in names:
        if (data_root / n).is_dir():
            return data_root / n
    raise DataError(data_root, f"missing folder ({what}): expected one of "
                               f"{', '.join(n + '/' for n in names)}")


def _files_under(folder: Path) -> set[str]:
    out = set()
    for dirpath, _, files in os.walk(folder, followlinks=True):  # split folders may be links
        rel = Path(dirpath).relative_to(folder).as_posix()
        prefix = "" if rel == "." else rel + "/"
        out.update(prefix + f for f in files)
    return out


def _camera(rel: str) -> int:
    fields = Path(rel).stem.split("_")
    if len(fields) < 3 or not fields[2].isdigit():
        raise ValueError("no camera field (expected PPPP_NNN_CC_...)")
    cam = int(fields[2])
    if not 1 <= cam <= NUM_CAMERAS:
        raise ValueError(f"camera {cam} outside 1..{NUM_CAMERAS}")
    return cam


def _read_list(list_path: Path, image_dir: Path, existing: set[str], split: str,
               log: ProblemLog) -> list[Sample]:
    samples = []
    text = list_path.read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            log.report(list_path, f"line {lineno}: expected '<path> <pid>', got {line.strip()!r}")
            continue
        rel, pid_text = parts
        try:
            pid = int(pid_text)
        except ValueError:
            log.report(list_path, f"line {lineno}: pid {pid_text!r} is not an integer")
            continue
        try:
            cam = _camera(rel)
        except ValueError as e:
            log.report(image_dir / rel, f"malformed file name ({e}); listed in {list_path.name} "
                                        f"line {lineno}")
            continue
        if rel not in existing:
            stem, ext = os.path.splitext(rel)
            alt = stem + {".jpg": ".jpeg", ".jpeg": ".jpg"}.get(ext.lower(), ext)
            if alt not in existing:
                log.report(image_dir / rel, f"listed in {list_path.name} line {lineno} but missing")
                continue
            rel = alt
        if pid == -1:
            continue
        samples.append(Sample(path=str(image_dir / rel), pid=pid, camid=cam - 1, split=split,
                              meta={"list": list_path.name}, camera=cam))
    return samples


@register_dataset("msmt17")
def msmt17(root: str | Path, on_error: str = "raise", keypoints: Optional[str | Path] = None,
           keep_val_separate: bool = False) -> MSMT17Dataset:
    """Parse MSMT17 V1 or V2 (see the module docstring)."""
    log = ProblemLog(on_error)
    data_root = find_root(root, RELEASE_DIRS, "list_query.txt", "MSMT17")
    train_dir = _pick_dir(data_root, TRAIN_DIRS, "training images")
    test_dir = _pick_dir(data_root, TEST_DIRS, "test images")
    version = "V2" if train_dir.name == "mask_train_v2" or data_root.name == "MSMT17_V2" else "V1"
    lists = {}
    for name in ("list_train.txt", "list_query.txt", "list_gallery.txt"):
        if not (data_root / name).is_file():
            raise DataError(data_root / name, "missing list file; is the dataset root right?")
        lists[name] = data_root / name
    train_files, test_files = _files_under(train_dir), _files_under(test_dir)
    train = _read_list(lists["list_train.txt"], train_dir, train_files, "train", log)
    val: list[Sample] = []
    if (data_root / "list_val.txt").is_file():
        val = _read_list(data_root / "list_val.txt", train_dir, train_files, "train", log)
    query = _read_list(lists["list_query.txt"], test_dir, test_files, "query", log)
    gallery = _read_list(lists["list_gallery.txt"], test_dir, test_files, "gallery", log)
    if not keep_val_separate:
        train, val = train + val, []
    ds = MSMT17Dataset(name="msmt17", root=data_root, train=train, query=query, gallery=gallery,
                       problems=log.problems, val=val, version=version)
    if keypoints is not None:
        ds.attach_keypoints(keypoints)
    return ds
