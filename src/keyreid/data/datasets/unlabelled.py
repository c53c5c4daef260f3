"""A folder of crops without identities: the unlabelled footage of a new site (`keyreid adapt`).

Every image under ROOT (recursively, hidden folders and files left out) is a training image of
unknown identity: Sample.pid is -1 for all of them, and there is no query or gallery. Nothing in
the folder names is read as an identity, so a tree of identity folders is unlabelled here too.

Cameras: ``cam_pattern`` as for the folder adapter (a regular expression with a named group
``cam`` searched in each file name; numbers kept as written, other values mapped to 0..C-1 in
sorted order). Without it every image has camid 0 and meta["camera_known"] False.

Options: ``on_error``, ``keypoints`` (keyreid sidecar to attach), ``cam_pattern``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from keyreid.data.datasets.base import IMAGE_EXTENSIONS, Dataset, ProblemLog, register_dataset
from keyreid.data.datasets.folder import _camera_ids, _Cameras
from keyreid.data.records import Sample
from keyreid.errors import DataError

OFFICIAL_COUNTS = None
UNKNOWN_PID = -1


def _images(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") for p in parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.append(path)
    return found


@register_dataset("unlabelled")
def unlabelled(root: str | Path, on_error: str = "raise", keypoints: Optional[str | Path] = None,
               cam_pattern: Optional[str] = None) -> Dataset:
    """Every image under `root` as an unlabelled training image (see the module docstring)."""
    log = ProblemLog(on_error)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(root, "target folder does not exist or is not a folder")
    data_root = root.resolve()
    files = _images(data_root)
    if not files:
        raise DataError(data_root, f"no images found under it (looked for {', '.join(IMAGE_EXTENSIONS)}, "
                                   "in subfolders too)")
    cameras = _Cameras(cam_pattern, log)
    raw = {}
    if cameras.regex is not None:
        for path in files:
            value = cameras.raw(path)
            if value is not None:
                raw[path] = value
        cam_ids = _camera_ids(sorted(set(raw.values())))
    train = []
    for path in files:
        if cameras.regex is not None:
            if path not in raw:
                continue  # reported
            cam, known = cam_ids[raw[path]], True
        else:
            cam, known = 0, False
        train.append(Sample(path=str(path), pid=UNKNOWN_PID, camid=cam, split="train",
                            meta={"camera_known": known}))
    ds = Dataset(name="unlabelled", root=data_root, train=train, query=[], gallery=[], problems=log.problems)
    if keypoints is not None:
        ds.attach_keypoints(keypoints)
    return ds
