"""Your own data: a folder per identity, or a CSV manifest.

Accepted layouts (checked in this order)::

    manifest=<file.csv>            columns path,pid[,camid][,split]; paths relative to the CSV's
                                   folder (which becomes the dataset root)
    <root>/train/<identity>/...    explicit splits: train/ (optional) plus query/ + gallery/,
    <root>/query/<identity>/...    or train/ plus test/ (test is split into query and gallery
    <root>/gallery/<identity>/...  as below)
    <root>/<identity>/<images>     one pool, split as below

Identities are folder names (or the CSV pid values), mapped to integer pids 0..N-1 in sorted
order over the whole dataset (so the same name gets the same pid in every split;
meta["identity"] keeps the name). A CSV pid column of integers is used as is.

Splitting a pool: a seeded shuffle puts ``test_fraction`` of the identities (default 0.5) in
the test part, the rest in train; in every test identity ``query_per_id`` seeded random images
(default 1) become queries and the rest the gallery. Test identities with fewer than
``query_per_id + 1`` images have nothing to match and go to the gallery only (as negatives).
``test_fraction=0`` makes everything training data.

Cameras: ``cam_pattern`` is a regular expression with a named group ``cam`` searched in each
file name (e.g. ``r"_c(?P<cam>\\d+)"``); numeric values become camid = int(value), the camera
as the file writes it (README "Cameras"), others are mapped to 0..C-1 in sorted order. A name
that does not match is a problem. Without camera information (no cam_pattern, no camid column)
every query gets camid 0 and every gallery and training image camid 1: the query image is never
in the gallery, so the standard re-ID protocol's "same pid and same camera" removal then removes
nothing and evaluation behaves as a camera-free protocol (every other image of the identity
counts as a match). The cameras reported by the summary are meaningless in that case;
meta["camera_known"] is False (and `keyreid extract` stores no camera for such images).

Options: ``on_error``, ``keypoints`` (keyreid sidecar to attach), ``cam_pattern``,
``query_per_id``, ``test_fraction``, ``seed``, ``manifest``.
"""

from __future__ import annotations

import csv
import os
import random
import re
from pathlib import Path
from typing import Optional

from keyreid.data.datasets.base import (IMAGE_EXTENSIONS, Dataset, ProblemLog, register_dataset)
from keyreid.data.records import SPLITS, Sample
from keyreid.errors import DataError

OFFICIAL_COUNTS = None  # users' data: nothing to compare with
QUERY_CAM, OTHER_CAM = 0, 1


def _identity_images(folder: Path) -> dict[str, list[Path]]:
    out = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if files:
            out[d.name] = files
    return out


class _Cameras:
    def __init__(self, pattern: Optional[str], log: ProblemLog):
        try:
            self.regex = re.compile(pattern) if pattern else None
        except re.error as e:
            raise DataError(None, f"option cam_pattern={pattern!r} is not a regular expression ({e})") from None
        if self.regex is not None and "cam" not in self.regex.groupindex:
            raise DataError(None, f"option cam_pattern={pattern!r} needs a named group (?P<cam>...)")
        self.log = log

    def raw(self, path: Path) -> Optional[str]:
        """The camera string of a file, or None when it does not match (reported)."""
        m = self.regex.search(path.name)
        if m is None or m.group("cam") is None:
            self.log.report(path, f"file name does not match cam_pattern {self.regex.pattern!r}")
            return None
        return m.group("cam")


def _camera_ids(values: list[str]) -> dict[str, int]:
    if all(v.isdigit() for v in values):
        return {v: int(v) for v in values}
    return {v: i for i, v in enumerate(sorted(set(values)))}


def _split_pool(pool: dict[str, list[Path]], test_fraction: float, query_per_id: int,
                rng: random.Random, only_test: bool = False) -> list[tuple[str, Path, str]]:
    ids = sorted(pool)
    order = ids[:]
    rng.shuffle(order)
    n_test = len(ids) if only_test else int(round(len(ids) * test_fraction))
    test_ids = set(order[:n_test])
    out = []
    for ident in ids:
        files = pool[ident]
        if ident not in test_ids:
            out.extend((ident, f, "train") for f in files)
            continue
        if len(files) <= query_per_id:
            out.extend((ident, f, "gallery") for f in files)
            continue
        queries = set(rng.sample(range(len(files)), query_per_id))
        out.extend((ident, f, "query" if i in queries else "gallery") for i, f in enumerate(files))
    return out


def _from_manifest(manifest: Path, log: ProblemLog) -> tuple[Path, list[tuple]]:
    if not manifest.is_file():
        raise DataError(manifest, "manifest file not found")
    base = manifest.parent.resolve()
    rows = []
    seen: dict[str, tuple[int, str]] = {}  # normalised path -> (line, pid) of its first row
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in cols or "pid" not in cols:
            raise DataError(manifest, f"manifest needs columns path,pid[,camid][,split]; got {cols}")
        for lineno, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if not row["path"] or not row["pid"]:
                log.report(manifest, f"line {lineno}: empty path or pid")
                continue
            path = base / row["path"]
            split = row.get("split") or None
            if split is not None and split not in SPLITS:
                log.report(manifest, f"line {lineno}: split {split!r} is not one of {SPLITS}")
                continue
            cam = row.get("camid") or None
            if cam is not None and not _is_int(cam):
                log.report(manifest, f"line {lineno}: camid {cam!r} is not an integer")
                continue
            key = os.path.normpath(path)
            if key in seen:
                first_line, first_pid = seen[key]
                if first_pid == row["pid"]:
                    log.report(manifest, f"line {lineno}: {row['path']} is listed twice (also on "
                                         f"line {first_line})")
                else:
                    log.report(manifest, f"line {lineno}: {row['path']} is listed under pid "
                                         f"{row['pid']!r} here and under pid {first_pid!r} on "
                                         f"line {first_line}")
                continue
            seen[key] = (lineno, row["pid"])
            if not path.is_file():
                log.report(path, f"listed in {manifest.name} line {lineno} but missing")
                continue
            rows.append((row["pid"], path, split, None if cam is None else int(cam), lineno))
    # pids are integers throughout or names throughout: one stray value must not renumber
    # every identity (a typo such as "12a" among integers would otherwise do just that)
    numeric = [r for r in rows if _is_int(r[0])]
    if numeric and len(numeric) < len(rows):
        names_are_stray = len(numeric) * 2 >= len(rows)
        for r in rows:
            if _is_int(r[0]) != names_are_stray:
                log.report(manifest, f"line {r[4]}: pid {r[0]!r} is not an integer (the other pids are)"
                           if names_are_stray else
                           f"line {r[4]}: pid {r[0]!r} is a number but most pids are names; use "
                           f"names throughout or integers throughout")
        rows = [r for r in rows if _is_int(r[0]) == names_are_stray]
    return base, [r[:4] for r in rows]


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit() and text.count("-") <= 1


@register_dataset("folder")
def folder(root: str | Path, on_error: str = "raise", keypoints: Optional[str | Path] = None,
           cam_pattern: Optional[str] = None, query_per_id: int = 1, test_fraction: float = 0.5,
           seed: int = 0, manifest: Optional[str | Path] = None) -> Dataset:
    """Parse a user's own data (see the module docstring for the accepted layouts)."""
    log = ProblemLog(on_error)
    if not isinstance(query_per_id, int) or query_per_id < 1:
        raise DataError(None, f"option query_per_id={query_per_id!r} must be an integer >= 1")
    if not isinstance(test_fraction, (int, float)) or not 0.0 <= test_fraction <= 1.0:
        raise DataError(None, f"option test_fraction={test_fraction!r} must be a number in [0, 1]")
    rng = random.Random(seed)
    root = Path(root).expanduser()
    if manifest is None and root.is_file() and root.suffix.lower() == ".csv":
        manifest = root
    # entries: (identity, path, split or None, camid or None)
    entries: list[tuple[str, Path, Optional[str], Optional[int]]] = []
    if manifest is not None:
        manifest = Path(manifest)
        if not manifest.is_absolute() and not manifest.exists():
            manifest = root / manifest
        data_root, rows = _from_manifest(manifest, log)
        unsplit: dict[str, list[Path]] = {}
        for ident, path, split, cam in rows:
            if split is None:
                unsplit.setdefault(ident, []).append(path)
            else:
                entries.append((ident, path, split, cam))
        cams = {path: cam for _, path, _, cam in rows}
        for ident, path, split in _split_pool(unsplit, test_fraction, query_per_id, rng):
            entries.append((ident, path, split, cams[path]))
    else:
        if not root.is_dir():
            raise DataError(root, "dataset root does not exist or is not a folder")
        data_root = root.resolve()
        subdirs = {s: data_root / s for s in ("train", "query", "gallery", "test")
                   if (data_root / s).is_dir()}
        if "query" in subdirs or "gallery" in subdirs:
            for s in ("query", "gallery"):
                if s not in subdirs:
                    raise DataError(data_root / s, "missing folder: query/ and gallery/ go together")
            for s in ("train", "query", "gallery"):
                if s in subdirs:
                    for ident, files in _identity_images(subdirs[s]).items():
                        entries.extend((ident, f, s, None) for f in files)
        elif "test" in subdirs:
            if "train" in subdirs:
                for ident, files in _identity_images(subdirs["train"]).items():
                    entries.extend((ident, f, "train", None) for f in files)
            pool = _identity_images(subdirs["test"])
            entries.extend((i, f, s, None) for i, f, s in
                           _split_pool(pool, 1.0, query_per_id, rng, only_test=True))
        else:
            pool = _identity_images(data_root)
            entries.extend((i, f, s, None) for i, f, s in
                           _split_pool(pool, test_fraction, query_per_id, rng))
        if not entries:
            raise DataError(data_root, "no images found: expected <root>/<identity>/<images> "
                                       "(or train/, query/, gallery/ folders of identities)")

    # pids: integers as given when every identity is an integer, else sorted names -> 0..N-1
    names = sorted({e[0] for e in entries})
    if all(_is_int(n) for n in names) and manifest is not None:
        pid_of = {n: int(n) for n in names}
    else:
        pid_of = {n: i for i, n in enumerate(names)}

    cameras = _Cameras(cam_pattern, log)
    raw_cams: dict[Path, str] = {}
    if cameras.regex is not None:
        for _, path, _, cam in entries:
            if cam is None:
                value = cameras.raw(path)
                if value is not None:
                    raw_cams[path] = value
        cam_ids = _camera_ids(sorted(set(raw_cams.values())))

    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for ident, path, split, cam in entries:
        known = True
        if cam is None and cameras.regex is not None:
            if path not in raw_cams:
                continue  # reported
            cam = cam_ids[raw_cams[path]]
        elif cam is None:
            known = False
            cam = QUERY_CAM if split == "query" else OTHER_CAM
        splits[split].append(Sample(path=str(path), pid=pid_of[ident], camid=cam, split=split,
                                    meta={"identity": ident, "camera_known": known}))
    ds = Dataset(name="folder", root=data_root, train=splits["train"], query=splits["query"],
                 gallery=splits["gallery"], problems=log.problems)
    if keypoints is not None:
        ds.attach_keypoints(keypoints)
    return ds
