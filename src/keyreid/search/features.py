"""The features folder `keyreid extract` writes and `keyreid index build` reads.

FEATURES/ holds ``features.npy`` (a .npy of shape [total, dim], filled in row order, memory-
mappable), ``rows.jsonl`` (one JSON object per finished row: row, path, pid, camid, timestamp,
track), ``skipped.txt`` (images skipped with on_error=skip, "path<TAB>problem") and
``manifest.json`` (see /work/prompts/interfaces.md; ``count`` rows are finished).

Cameras (README "Cameras"): a row's camid is the camera as the image's file name writes it
(``0301_c2s1_...`` -> 2), whether it came from --pattern or a dataset adapter, and the manifest
says so with ``"camera_base": 0`` (add it to a stored camid to get the camera as named). A folder
written before that rule records no camera_base: its adapter rows hold the adapter's 0-based id
(see `stored_camera_base`), and they are read back, and continued, in the file's numbering.

Crash safety: a batch is committed in three steps, vectors (flushed) -> rows.jsonl lines
(fsynced) -> manifest (atomic rename). The manifest is the commit point: whatever lies past
``count`` in the other files is unfinished and is cut off (rows, skipped lines) or written over
(vectors) when the run continues, and finished rows are never written again. Batches start at
multiples of the batch size, so a resumed run feeds the model exactly the batches an
uninterrupted run would, and the files come out byte-identical.

Sharded extraction writes FEATURES/shard-00000-of-00004/ ...; each is a complete features
folder, and read_features(FEATURES) concatenates them in shard order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from keyreid.errors import DataError, KeyreidError
from keyreid.utils.io import DiskFullError, atomic_write_text

FORMAT = "keyreid-features"
VERSION = 1
MANIFEST, VECTORS, ROWS, SKIPPED = "manifest.json", "features.npy", "rows.jsonl", "skipped.txt"
DTYPES = ("float32", "float16")


def shard_dir(root: Path, index: int, count: int) -> Path:
    return Path(root) / f"shard-{index:05d}-of-{count:05d}"


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "no features manifest here; is this a folder written by `keyreid extract`?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"features manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(path, f"not a keyreid features manifest (format should be {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise DataError(path, f"features format version {manifest.get('version')!r}; this keyreid reads {VERSION}")
    for key in ("fingerprint", "dim", "dtype", "normalized", "distance", "count", "total", "complete"):
        if key not in manifest:
            raise DataError(path, f"features manifest lacks {key!r}")
    return manifest


def stored_camera_base(manifest: dict) -> int:
    """What to add to the camids stored in a features folder to get the cameras as the file names
    write them (README "Cameras"): the manifest's camera_base (0 since the rule). A folder written
    before records none; decided from its source: a dataset adapter stored Sample.camid, the
    file's camera minus LEGACY_CAMERA_BASE (Market-style adapters: 1), --pattern the file's own
    number (0)."""
    if "camera_base" in manifest:
        return int(manifest["camera_base"] or 0)
    source = manifest.get("source") or {}
    if source.get("kind") == "dataset":
        from keyreid.data.datasets.base import LEGACY_CAMERA_BASE

        return LEGACY_CAMERA_BASE.get(source.get("dataset"), 0)
    return 0


def _fsync_append(path: Path, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(lines))
        f.flush()
        os.fsync(f.fileno())


def _cut_lines(path: Path, keep: int) -> None:
    """Keep the first `keep` lines of `path` (lines past the commit point are unfinished)."""
    if not path.exists():
        if keep:
            raise DataError(path, f"missing, but the manifest says {keep} lines were finished")
        path.touch()
        return
    with open(path, "rb+") as f:
        offset = 0
        for i in range(keep):
            line = f.readline()
            if not line.endswith(b"\n"):
                raise DataError(path, f"has {i} finished lines, the manifest says {keep}")
            offset += len(line)
        f.truncate(offset)
        f.flush()
        os.fsync(f.fileno())


class FeatureWriter:
    """Resumable writer of one features folder (one shard).

    Creating it on a folder that already holds a run of the same model and the same image
    list continues that run at `self.done` (images processed so far); another model or another
    image list is refused, nothing is changed.
    """

    def __init__(self, folder: Path, *, fingerprint: str, dim: int, total: int, dtype: str = "float32",
                 normalized: bool, distance: str, flip: bool = False, shard: Optional[list] = None,
                 source: Optional[dict] = None, model: Optional[dict] = None,
                 checkpoint: Optional[str] = None):
        if dtype not in DTYPES:
            raise KeyreidError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
        self.folder = Path(folder)
        self.fresh = {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint, "dim": int(dim),
                      "dtype": dtype, "normalized": bool(normalized), "distance": distance, "count": 0,
                      "total": int(total), "complete": False, "shard": shard, "flip": bool(flip),
                      "source": source or {}, "model": model or {}, "checkpoint": checkpoint,
                      "images_done": 0, "skipped": 0, "camera_base": 0}
        if (self.folder / MANIFEST).exists():
            self.manifest = read_manifest(self.folder)
            self._check_same_run()
            self._recover()
        else:
            self._create()
        # rows come in the file names' numbering; a folder begun before the camera rule keeps its own
        self.camera_base = stored_camera_base(self.manifest)

    # ------------------------------------------------------------------ set-up
    def _check_same_run(self) -> None:
        m, f, where = self.manifest, self.fresh, self.folder / MANIFEST
        if m["fingerprint"] != f["fingerprint"]:
            raise DataError(where, f"holds features of another model (fingerprint {m['fingerprint']}, this "
                                   f"model is {f['fingerprint']}); write to a new folder")
        for key, what in (("total", "image count"), ("source", "image list"), ("flip", "--flip"),
                          ("dtype", "--dtype"), ("shard", "shard"), ("dim", "dimension")):
            if m.get(key) != f[key]:
                raise DataError(where, f"holds a run with another {what} ({m.get(key)!r}, now {f[key]!r}); "
                                       "rerun with the same arguments or write to a new folder")

    def _create(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        leftovers = [p.name for p in (self.folder / VECTORS, self.folder / ROWS) if p.exists()]
        if leftovers:
            raise DataError(self.folder, f"has {leftovers} but no manifest; not overwriting them, "
                                         "choose an empty folder")
        self.manifest = dict(self.fresh)
        need = self.fresh["total"] * self.fresh["dim"] * np.dtype(self.fresh["dtype"]).itemsize + 4096
        free = shutil.disk_usage(self.folder).free
        if free < need:  # a memory-mapped file on a full disk dies of SIGBUS, without a message
            raise DiskFullError(f"{self.folder / VECTORS}: needs {need / 2**20:.1f} MB, "
                                f"{free / 2**20:.1f} MB free in {self.folder}; free some space or extract elsewhere")
        np.lib.format.open_memmap(self.folder / VECTORS, mode="w+", dtype=self.fresh["dtype"],
                                  shape=(self.fresh["total"], self.fresh["dim"])).flush()
        (self.folder / ROWS).write_bytes(b"")
        (self.folder / SKIPPED).write_bytes(b"")
        atomic_write_text(self.folder / MANIFEST, json.dumps(self.manifest, indent=1))

    def _recover(self) -> None:
        m = self.manifest
        _cut_lines(self.folder / ROWS, m["count"])
        _cut_lines(self.folder / SKIPPED, m.get("skipped", 0))
        vectors = self.folder / VECTORS
        try:
            arr = np.load(vectors, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(vectors, f"cannot be read as .npy ({e})") from None
        if arr.shape != (m["total"], m["dim"]) or arr.dtype != np.dtype(m["dtype"]):
            raise DataError(vectors, f"shape {arr.shape} {arr.dtype} does not match the manifest "
                                     f"({m['total']}, {m['dim']}) {m['dtype']}")

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> int:
        return int(self.manifest["images_done"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    # ------------------------------------------------------------------ writing
    def commit(self, vectors: np.ndarray, rows: list[dict], images: int,
               skipped: Optional[list[tuple[str, str]]] = None) -> None:
        """Append one batch: `rows` (with their `vectors`) for `images` images processed, of which
        the `skipped` (path, problem) pairs gave no row."""
        m = self.manifest
        n = len(rows)
        if vectors.shape != (n, m["dim"]):
            raise KeyreidError(f"batch of {vectors.shape} vectors for {n} rows of dim {m['dim']}")
        start = m["count"]
        if self.camera_base:
            rows = [dict(r, camid=r["camid"] - self.camera_base) if r.get("camid") is not None else r
                    for r in rows]
        if n:
            mm = np.load(self.folder / VECTORS, mmap_mode="r+")
            mm[start:start + n] = vectors.astype(m["dtype"])
            mm.flush()
            del mm
            _fsync_append(self.folder / ROWS, [json.dumps({"row": start + i, **r}) + "\n"
                                               for i, r in enumerate(rows)])
        if skipped:
            _fsync_append(self.folder / SKIPPED, [f"{p}\t{why}\n" for p, why in skipped])
        m = dict(m, count=start + n, images_done=m["images_done"] + images,
                 skipped=m.get("skipped", 0) + len(skipped or []))
        m["complete"] = m["images_done"] >= m["total"]
        atomic_write_text(self.folder / MANIFEST, json.dumps(m, indent=1))  # the commit point
        self.manifest = m


@dataclass
class FeatureSet:
    vectors: np.ndarray        # float32 [N, D] (a view of the memory map when stored as float32)
    rows: list[dict]
    manifest: dict             # the first shard's manifest, count summed over shards
    folders: list[Path]


_SHARD = re.compile(r"shard-(\d+)-of-(\d+)")


def _shard_names(path: Path) -> list[tuple[int, int, Path]]:
    found = []
    for p in sorted(Path(path).glob("shard-*-of-*")) if Path(path).is_dir() else []:
        m = _SHARD.fullmatch(p.name)
        if m and (p / MANIFEST).exists():
            found.append((int(m.group(1)), int(m.group(2)), p))
    return found


def check_shard_set(path: Path, index: int, count: int) -> None:
    """Before writing shard index/count into `path`: its other shards must split the same way
    (shards of 2 and of 3 blocks mixed would duplicate some images and miss others)."""
    others = sorted({n for _, n, _ in _shard_names(path)} - {count})
    if others:
        names = ", ".join(p.name for _, _, p in _shard_names(path))
        raise DataError(path, f"holds shards of another split ({names}); shard {index}/{count} cannot join "
                              "them: extract every shard with the same N, or into a new folder")


def feature_folders(path: Path) -> list[Path]:
    """The folders holding features under `path`: itself, or its shard-*/ folders in order."""
    path = Path(path)
    if (path / MANIFEST).exists():
        return [path]
    found = _shard_names(path)
    if not found:
        raise DataError(path, "no features here (no manifest.json, no shard-*/ folders)")
    counts = sorted({n for _, n, _ in found})
    names = ", ".join(p.name for _, _, p in found)
    if len(counts) > 1:
        raise DataError(path, f"mixes shards of different splits ({names}): they would duplicate some images "
                              "and miss others; keep the shards of one `--shard i/N` run")
    count = counts[0]
    indices = [i for i, _, _ in found]
    if sorted(indices) != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        raise DataError(path, f"has {len(found)} of {count} shards (missing {', '.join(map(str, missing))}); "
                              "extract the missing ones first")
    for i, n, p in found:   # each shard's manifest must say it is the block its name says
        m = read_manifest(p)
        if m.get("shard") is not None and list(m["shard"]) != [i, n]:
            raise DataError(p, f"its manifest says shard {m['shard'][0]}/{m['shard'][1]}, its name {i}/{n}")
    return [p for _, _, p in sorted(found)]


def _read_one(folder: Path, allow_incomplete: bool) -> tuple[np.ndarray, list[dict], dict]:
    m = read_manifest(folder)
    if not m["complete"] and not allow_incomplete:
        raise DataError(folder, f"extraction unfinished ({m['images_done']} of {m['total']} images); "
                                "rerun the same `keyreid extract` command to finish it")
    try:
        vectors = np.load(folder / VECTORS, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:   # a truncated or foreign file
        raise DataError(folder / VECTORS, f"cannot be read as .npy ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                                          "extract again into a new folder") from None
    if vectors.ndim != 2 or vectors.shape[0] < m["count"] or vectors.shape[1] != m["dim"]:
        raise DataError(folder / VECTORS, f"holds shape {vectors.shape}, the manifest {m['count']} rows of "
                                          f"{m['dim']}; extract again into a new folder")
    vectors = vectors[:m["count"]]
    rows = []
    try:
        f = open(folder / ROWS, encoding="utf-8")
    except OSError as e:
        raise DataError(folder / ROWS, f"cannot be read ({e.strerror or e})") from None
    with f:
        for n in range(1, m["count"] + 1):
            try:
                line = f.readline()
            except UnicodeDecodeError:
                raise DataError(folder / ROWS, f"line {n} is not UTF-8 text") from None
            if not line.endswith("\n"):
                raise DataError(folder / ROWS, f"has fewer rows than the manifest's {m['count']}")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(folder / ROWS, f"line {n} is not a JSON object ({e.msg})") from None
            if not isinstance(row, dict) or "path" not in row:
                raise DataError(folder / ROWS, f"line {n} is not a row of keyreid extract (no \"path\")")
            rows.append(row)
    base = stored_camera_base(m)
    if base:   # an adapter's folder from before the camera rule: as the file names write them
        for row in rows:
            if isinstance(row.get("camid"), int):
                row["camid"] += base
    return vectors, rows, m


def read_features(path: Path, allow_incomplete: bool = False) -> FeatureSet:
    """All finished rows of a features folder (or of all its shards, in shard order), cameras as
    the file names write them (README "Cameras"), whenever the folder was written."""
    folders = feature_folders(Path(path))
    parts = [_read_one(f, allow_incomplete) for f in folders]
    first = parts[0][2]
    for folder, (_, _, m) in zip(folders[1:], parts[1:]):
        for key in ("fingerprint", "dim", "normalized", "distance"):
            if m[key] != first[key]:
                raise DataError(folder, f"shard {key} {m[key]!r} differs from the first shard's {first[key]!r}")
    if len(parts) == 1 and parts[0][0].dtype == np.float32:
        vectors = parts[0][0]
    else:
        vectors = np.concatenate([p[0] for p in parts]).astype(np.float32, copy=False) if parts else None
    rows = [r for p in parts for r in p[1]]
    manifest = dict(first, count=sum(p[2]["count"] for p in parts),
                    total=sum(p[2]["total"] for p in parts), shard=None, camera_base=0)
    return FeatureSet(np.asarray(vectors, dtype=np.float32), rows, manifest, folders)


__all__ = ["FeatureSet", "FeatureWriter", "check_shard_set", "feature_folders", "read_features", "read_manifest", "shard_dir",
           "stored_camera_base"]
