"""Dataset registry and the container every adapter returns."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from keyreid.data.keypoints import read_sidecar
from keyreid.data.records import Sample
from keyreid.errors import DataError
from keyreid.utils.registry import Registry

DATASETS = Registry("dataset", builtin=[
    f"keyreid.data.datasets.{m}"
    for m in ("market1501", "dukemtmc", "msmt17", "veri776", "cub200", "cars196", "folder", "unlabelled")])
register_dataset = DATASETS.register  # class or function decorator; users can add their own


def dataset_names() -> list[str]:
    return DATASETS.names()


def build_dataset(name: str, root: str | Path, **kwargs) -> "Dataset":
    """Parse the dataset `name` under `root` (adapter keyword arguments pass through).

    An option the adapter does not take is a DataError naming the options it does take."""
    adapter = DATASETS.get(name)
    try:
        params = inspect.signature(adapter).parameters
    except (TypeError, ValueError):  # a builtin or C callable: let the call decide
        params = {}
    if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        takes = [n for n in list(params)[1:]]
        unknown = sorted(set(kwargs) - set(takes))
        if unknown:
            raise DataError(None, f"dataset {name!r} has no option(s) {', '.join(unknown)}; its "
                                  f"options: {', '.join(takes) or 'none'}")
    return adapter(root, **kwargs)


@dataclass
class Dataset:
    """Parsed dataset: train / query / gallery lists of Samples plus what they share.

    For retrieval datasets (CUB, Cars196) `query` and `gallery` are both the test images and
    `protocol` is "retrieval"; re-ID datasets use "reid".
    """

    name: str
    root: Path
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    skeleton: Optional[str] = None
    protocol: str = "reid"
    problems: list[str] = field(default_factory=list)  # skipped items, when skipping is enabled
    keypoint_coverage: Optional["KeypointCoverage"] = field(default=None, repr=False)

    def summary(self) -> dict[str, dict[str, int]]:
        """Identities, images and cameras per split (the numbers adapters document)."""
        out = {}
        for split in ("train", "query", "gallery"):
            items = getattr(self, split)
            out[split] = {
                "ids": len({s.pid for s in items}),
                "images": len(items),
                "cameras": len({s.camid for s in items}),
            }
        return out

    def attach_keypoints(self, sidecar: str | Path, min_confidence: float = 0.0,
                         require_all: bool = True) -> int:
        """Attach keypoints from a sidecar to every sample; returns how many got keypoints.

        Keypoints with visibility below `min_confidence` are marked invisible (v = 0).
        With require_all, a sample missing from the sidecar is an error naming both files.
        What matched is kept in `keypoint_coverage` (engine.data turns it into clear errors).
        """
        skel_name, entries = read_sidecar(sidecar)
        if self.skeleton is not None and skel_name != self.skeleton:
            raise DataError(sidecar, f"sidecar skeleton {skel_name!r} does not match dataset "
                                     f"{self.name!r} ({self.skeleton!r})")
        cov = KeypointCoverage(str(sidecar), next(iter(entries), None))
        for split in ("train", "query", "gallery"):
            for s in getattr(self, split):
                rel = relative_key(self.root, s.path)
                kp = entries.get(rel)
                if kp is None:
                    cov.missing.setdefault(split, []).append(rel)
                    continue
                kp = kp.copy()
                kp[kp[:, 2] < min_confidence, 2] = 0.0
                s.keypoints = kp
                cov.matched[split] = cov.matched.get(split, 0) + 1
        self.keypoint_coverage = cov
        missing = [k for keys in cov.missing.values() for k in keys]
        if missing and require_all:
            total = sum(cov.matched.values()) + len(missing)
            raise DataError(sidecar, cov.describe_missing(missing, total, "image(s)", self.root))
        self.skeleton = skel_name
        return sum(cov.matched.values())


@dataclass
class KeypointCoverage:
    """Which samples a sidecar covered: matched counts and missing keys per split."""

    sidecar: str
    first_key: Optional[str]  # the sidecar's first entry, to show how its keys look
    matched: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)

    def describe_missing(self, missing: list[str], total: int, what: str, root) -> str:
        """One line: how many of `total` lack an entry, with the keys that show why."""
        if len(missing) < total:
            return f"no keypoints for {len(missing)} of {total} {what}, first: {', '.join(missing[:3])}"
        text = (f"0 of {total} {what} matched keys in {self.sidecar}; first key "
                f"{self.first_key!r}, first image {missing[0]!r} (keys are paths relative to "
                f"{root} with forward slashes)")
        if self.first_key and "\\" in self.first_key:
            text += "; the sidecar's keys use backslashes"
        elif self.first_key and (self.first_key.startswith("/") or ":" in self.first_key[:3]):
            text += "; the sidecar's keys are absolute paths"
        return text

def relative_key(root: str | Path, path: str | Path) -> str:
    """Sidecar key of an image: its path relative to the dataset root, with forward slashes.

    Compared as written first (absolute, not resolved): a split folder may be a symbolic link to
    another disk, and resolving it would take the image out of the root. Resolving both is the
    fall-back for paths written differently (`..`, a linked root)."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        pass
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        raise DataError(path, f"is not inside the dataset root {root}") from None


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(path, f"missing folder ({what}); is the dataset root right?")
    return path


def keypoints_array(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Helpers shared by the adapters (added with the adapters; additions only).

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ON_ERROR_CHOICES = ("raise", "skip")


class ProblemLog:
    """Where an adapter sends a bad item: raise a DataError (default) or record it and skip.

    With on_error="skip" the offending sample is dropped and "path: problem" is appended to
    `problems`, which the adapter stores in Dataset.problems (check_dataset relies on this to
    list every problem of a tree at once).
    """

    def __init__(self, on_error: str = "raise"):
        if on_error not in ON_ERROR_CHOICES:
            raise DataError(None, f"option on_error={on_error!r} is not allowed; use one of: "
                                  f"{', '.join(ON_ERROR_CHOICES)}")
        self.on_error = on_error
        self.problems: list[str] = []

    def report(self, path: str | Path | None, problem: str) -> None:
        err = DataError(path, problem)
        if self.on_error == "raise":
            raise err
        self.problems.append(str(err))


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (other files such as Thumbs.db are
    ignored: the official releases ship them)."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def relabel(samples: list[Sample]) -> tuple[list[Sample], dict[int, int]]:
    """Map the pids of `samples` to 0..N-1 (in ascending order of the original pid).

    Adapters keep the original pids in Sample.pid (so results can be traced back to file names
    and query/gallery pids stay comparable); a trainer that needs class indices calls this on
    the training split. Returns new Sample objects (the originals are left untouched, the old
    pid is kept in meta["orig_pid"]) and the mapping {original pid: new label}.
    """
    from dataclasses import replace

    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    out = [replace(s, pid=mapping[s.pid], meta={**s.meta, "orig_pid": s.pid}) for s in samples]
    return out, mapping


# Features folders written before the camera rule (README "Cameras") hold Sample.camid as these
# adapters made it, the file's camera minus this; keyreid.search.features reads them back as the
# file names write them. Other adapters stored the camera as named (folder) or one fixed id.
LEGACY_CAMERA_BASE = {"market1501": 1, "dukemtmc": 1, "msmt17": 1, "veri776": 1}
