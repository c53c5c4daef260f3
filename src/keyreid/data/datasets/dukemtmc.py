"""DukeMTMC-reID (Ristani et al., ECCVW 2016; re-ID split by Zheng et al., ICCV 2017).

Layout (release ``DukeMTMC-reID``), the same folder names as Market-1501::

    <root>/bounding_box_train/0001_c2_f0046182.jpg
    <root>/query/
    <root>/bounding_box_test/

`root` may be the release folder or its parent holding ``DukeMTMC-reID/``. File names are
``PPPP_cC_fFFFFFFF.jpg``: pid, camera C (1-8), frame (7 digits). Sample.camid is C - 1,
Sample.camera C (README "Cameras"), meta["frame"] the frame. Junk (-1) and distractor (0)
handling as for Market-1501 (the release has neither; its 408 distractor identities have
ordinary pids and sit in the gallery).

Official numbers: train 702 ids / 16,522 images, query 702 / 2,228, gallery 1,110 / 17,661;
8 cameras in every split.

Options: ``on_error``, ``keypoints`` (sidecar), ``num_cameras`` (default 8).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from keyreid.data.datasets.base import Dataset, ProblemLog, register_dataset
from keyreid.data.datasets.market1501 import SPLIT_DIRS, find_root, finish, parse_named_folders

RELEASE_DIR = "DukeMTMC-reID"
NAME_PATTERN = re.compile(r"^(-1|\d{4})_c(\d)_f(\d{7})\.(?:jpe?g|png)$", re.IGNORECASE)
NAME_FORMAT = "PPPP_cC_fFFFFFFF.jpg"

OFFICIAL_COUNTS = {
    "train": {"ids": 702, "images": 16522, "cameras": 8},
    "query": {"ids": 702, "images": 2228, "cameras": 8},
    "gallery": {"ids": 1110, "images": 17661, "cameras": 8},
}


@register_dataset("dukemtmc")
def dukemtmc(root: str | Path, on_error: str = "raise", keypoints: Optional[str | Path] = None,
             num_cameras: int = 8) -> Dataset:
    """Parse DukeMTMC-reID (see the module docstring)."""

    def parse(filename: str):
        m = NAME_PATTERN.match(filename)
        if m is None:
            raise ValueError("does not match the naming scheme")
        pid, cam = int(m.group(1)), int(m.group(2))
        if not 1 <= cam <= num_cameras:
            raise ValueError(f"camera {cam} outside 1..{num_cameras}")
        return pid, cam, {"frame": int(m.group(3))}

    log = ProblemLog(on_error)
    data_root = find_root(root, (RELEASE_DIR,), SPLIT_DIRS["train"], "DukeMTMC-reID")
    splits = parse_named_folders(data_root, SPLIT_DIRS, parse, NAME_FORMAT, log)
    return finish("dukemtmc", data_root, splits, log, keypoints)
