"""One gallery index interface, one file per engine (faiss_backend.py, qdrant_backend.py).

INDEX/ is a folder with ``manifest.json`` (format keyreid-index) plus whatever the backend keeps
there. Scores are higher-is-better in every backend: cosine similarity (inner product of unit
vectors) for normalised indexes, minus the squared L2 distance otherwise.

Cameras (README "Cameras"): every camera going in or coming out of an index (Hit.camid,
get_metadata, SearchFilter, remove(cameras=...), add's metadata) is the camera as the image's
file name writes it. The manifest's ``camera_base`` says what the stored numbers mean (shown =
stored + camera_base; 0 for every index written since the rule); an index written before
records none and `open_index` works it out from the features folders it was built from.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
import sys
from abc import ABC, abstractmethod
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from keyreid.errors import DataError, KeyreidError
from keyreid.utils.io import LockedError, file_lock
from keyreid.utils.registry import Registry

FORMAT = "keyreid-index"
VERSION = 1
MANIFEST = "manifest.json"
INDEX_TYPES = ("flat", "ivf", "hnsw", "pq", "auto")
NORM_TOLERANCE = 1e-3  # float16 storage keeps unit norms to ~1e-4
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1  # ids and cameras are SQLite / faiss 64-bit integers

# One writer at a time: every change (index build / add / remove, keyreid serve's gallery
# routes) runs under an exclusive flock on this file, and reads the manifest only once it holds
# it, so no writer saves over another's additions. The OS drops the lock when its holder dies.
LOCK = ".keyreid-index.lock"
WRITE_WAIT_S = 300.0
# What a killed writer can leave behind: atomic_write's temporaries (mkstemp: name.XXXXXXXX.tmp)
# and faiss generation files that no manifest names. Removed only under the lock.
_OUR_TMP = re.compile(r"^(manifest\.json|vectors-\d{6}\.faiss|metadata-\d{6}\.sqlite)\.[A-Za-z0-9_]{8}\.tmp$")
_GENERATION = re.compile(r"^(vectors-\d{6}\.faiss|metadata-\d{6}\.sqlite)$")

BACKENDS = Registry("index backend", builtin=["keyreid.search.faiss_backend",
                                              "keyreid.search.qdrant_backend"])
register_backend = BACKENDS.register


class SearchIndexError(KeyreidError):
    """A problem with an index or with what is put into it."""


@dataclass
class SearchFilter:
    """Cameras as the file names write them (README "Cameras")."""

    cameras: Optional[set[int]] = None        # keep only these cameras
    cameras_not: Optional[set[int]] = None    # drop these cameras
    after: Optional[float] = None             # timestamp >= after
    before: Optional[float] = None            # timestamp <= before

    def is_empty(self) -> bool:
        return self.cameras is None and self.cameras_not is None and self.after is None and self.before is None

    def keeps(self, meta: dict) -> bool:
        """The reference semantics every backend follows: an unknown camera is never one of
        `cameras` (dropped) and never one of `cameras_not` (kept); an unknown time is outside
        every time window."""
        cam, t = meta.get("camid"), meta.get("timestamp")
        if self.cameras is not None and (cam is None or cam not in self.cameras):
            return False
        if self.cameras_not is not None and cam is not None and cam in self.cameras_not:
            return False
        if self.after is not None and (t is None or t < self.after):
            return False
        if self.before is not None and (t is None or t > self.before):
            return False
        return True


@dataclass
class Hit:
    id: int
    score: float
    path: str
    camid: Optional[int]
    pid: Optional[int]
    timestamp: Optional[float]
    track: Optional[int]


META_KEYS = ("path", "pid", "camid", "timestamp", "track")


class GalleryIndex(ABC):
    manifest: dict

    @abstractmethod
    def search(self, queries: np.ndarray, top_k: int, filt: Optional[SearchFilter] = None) -> list[list[Hit]]:
        ...

    @abstractmethod
    def add(self, vectors: np.ndarray, metadata: list[dict], fingerprint: str,
            ids: Optional[np.ndarray] = None) -> np.ndarray:
        ...

    @abstractmethod
    def remove(self, ids: Optional[Iterable[int]] = None, cameras: Optional[Iterable[int]] = None) -> int:
        ...

    @abstractmethod
    def get_vectors(self, ids: Iterable[int]) -> np.ndarray:
        ...

    @abstractmethod
    def get_metadata(self, ids: Iterable[int]) -> list[dict]:
        ...

    @abstractmethod
    def save(self) -> None:
        ...

    def info(self) -> dict:
        return dict(self.manifest)

    def calibrate(self, queries: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray) -> dict:
        """After a build: tune approximate search on a held-out sample and report its recall@10
        against exact search (exact backends report 1.0)."""
        self.build_report = {"type": self.manifest["type"], "recall@10": 1.0, "exact": True}
        return self.build_report

    def __len__(self) -> int:
        return int(self.manifest["count"])

    # ------------------------------------------------------------------ cameras (README "Cameras")
    @property
    def camera_base(self) -> int:
        """Add it to a stored camera to get the camera as the file names write it: the manifest's
        camera_base, or for an index written before the rule what `open_index` worked out (a
        backend's save then records it)."""
        derived = self.__dict__.get("_camera_base")
        return int(self.manifest.get("camera_base") or 0) if derived is None else int(derived)

    def shown_camera(self, stored: Optional[int]) -> Optional[int]:
        return None if stored is None else int(stored) + self.camera_base

    def stored_cameras(self, cameras: Optional[Iterable[int]]) -> Optional[set[int]]:
        return None if cameras is None else {int(c) - self.camera_base for c in cameras}

    def stored_filter(self, filt: Optional[SearchFilter]) -> Optional[SearchFilter]:
        if filt is None or not self.camera_base:
            return filt
        return SearchFilter(cameras=self.stored_cameras(filt.cameras), cameras_not=self.stored_cameras(filt.cameras_not),
                            after=filt.after, before=filt.before)

    def stored_metadata(self, metadata: list[dict]) -> list[dict]:
        if not self.camera_base:
            return metadata
        return [dict(m, camid=m["camid"] - self.camera_base) if m.get("camid") is not None else m for m in metadata]

    def shown_metadata(self, row: dict) -> dict:
        if not self.camera_base or row.get("camid") is None:
            return row
        return dict(row, camid=row["camid"] + self.camera_base)

    def cameras(self) -> Optional[list[int]]:
        """The cameras the index holds, as the file names write them; None where the backend
        cannot list them cheaply."""
        return None

    def rebase_cameras(self, ranges: list[tuple[int, int, int]]) -> bool:
        """An index from before the camera rule whose sources stored cameras differently: make
        the stored cameras of each (first id, last id, base) range as named, in memory (a save
        keeps it); False when the backend cannot."""
        return False

    def close(self) -> None:
        """Release files or connections (Qdrant's local mode locks its folder while open)."""

    def recover(self) -> bool:
        """Undo what a killed writer left half-done (called under the writer lock); True when
        something was repaired. Backends whose manifest is their only commit point have nothing
        to undo."""
        return False

    # ------------------------------------------------------------------ shared checks
    def check_vectors(self, vectors: np.ndarray, fingerprint: str, what: str = "features") -> np.ndarray:
        return check_vectors(self.manifest, vectors, fingerprint, what)

    def assign_ids(self, n: int, ids: Optional[np.ndarray]) -> np.ndarray:
        """Fresh ids continue from next_id; given ids must be new, unique and non-negative."""
        if ids is None:
            start = int(self.manifest["next_id"])
            return np.arange(start, start + n, dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) != n:
            raise SearchIndexError(f"{len(ids)} ids for {n} vectors")
        if (ids < 0).any() or len(np.unique(ids)) != n:
            raise SearchIndexError("ids must be unique and non-negative")
        return ids

    def _after_add(self, ids: np.ndarray) -> None:
        self.manifest["count"] = int(self.manifest["count"]) + len(ids)
        if len(ids):
            self.manifest["next_id"] = max(int(self.manifest["next_id"]), int(ids.max()) + 1)


def check_vectors(manifest: dict, vectors: np.ndarray, fingerprint: str, what: str = "features") -> np.ndarray:
    """float32 [N, D] vectors that may go into the index described by `manifest`, or a clear error."""
    if fingerprint != manifest["fingerprint"]:
        raise SearchIndexError(f"{what} come from another model (fingerprint {fingerprint}) than the index "
                          f"({manifest['fingerprint']}); extract them with the index's model")
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != manifest["dim"]:
        raise SearchIndexError(f"{what} have shape {tuple(v.shape)}; the index holds {manifest['dim']}-d vectors")
    if not np.isfinite(v).all():
        raise SearchIndexError(f"{what} contain NaN or infinite values")
    if manifest["normalized"] and len(v):
        norms = np.linalg.norm(v, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
        if len(bad):
            raise SearchIndexError(f"{what} are not L2-normalised (row {bad[0]} has norm {norms[bad[0]]:.4g}) "
                              "but the index is a cosine index of unit vectors")
    return np.ascontiguousarray(v)


def exact_neighbours(gallery: np.ndarray, ids: np.ndarray, queries: np.ndarray, normalized: bool,
                     k: int = 10) -> np.ndarray:
    """Ids of the exact k nearest gallery vectors of each query (brute force in blocks, so no
    second copy of the gallery is made)."""
    k = min(k, len(gallery))
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for s in range(0, len(gallery), 65536):
        block = gallery[s:s + 65536]
        if normalized:
            scores = queries @ block.T
        else:
            scores = -(np.square(queries).sum(1)[:, None] - 2 * queries @ block.T + np.square(block).sum(1)[None])
        both_s = np.concatenate([best_s, scores], 1)
        both_i = np.concatenate([best_i, np.broadcast_to(ids[s:s + 65536], scores.shape)], 1)
        top = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(both_s, top, 1), np.take_along_axis(both_i, top, 1)
    return best_i


def recall_at_10(index: "GalleryIndex", queries: np.ndarray, truth: np.ndarray) -> float:
    """recall@10 of `index` against the exact neighbours `truth` of `queries`."""
    hits = index.search(queries, truth.shape[1])
    return float(np.mean([len({h.id for h in got} & set(want.tolist())) / len(want)
                          for got, want in zip(hits, truth)]))


def new_manifest(backend: str, index_type: str, fingerprint: str, dim: int, normalized: bool,
                 distance: str, **extra) -> dict:
    return {"format": FORMAT, "version": VERSION, "backend": backend, "type": index_type,
            "fingerprint": fingerprint, "dim": int(dim), "metric": "ip" if normalized else "l2",
            "normalized": bool(normalized), "distance": distance, "count": 0, "next_id": 0,
            "camera_base": 0, **extra}


def read_index_manifest(path: Path) -> dict:
    where = Path(path) / MANIFEST
    if not Path(path).is_dir():
        raise DataError(path, "no index here (not a folder)")
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(where, "no index manifest; is this a folder written by `keyreid index build`?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(where, f"index manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(where, f"not a keyreid index manifest (format should be {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise DataError(where, f"index format version {manifest.get('version')!r}; this keyreid reads {VERSION}")
    for key in ("backend", "type", "fingerprint", "dim", "metric", "normalized", "distance", "count", "next_id"):
        if key not in manifest:
            raise DataError(where, f"index manifest lacks {key!r}")
    return manifest


def rows_metadata(rows: list[dict]) -> list[dict]:
    return [{k: r.get(k) for k in META_KEYS} for r in rows]


def parse_camera(token: str) -> int:
    """A camera as a user types it: as the file names write it, with or without its "c" (``2``
    or ``c2``, README "Cameras"); ValueError otherwise."""
    text = token.strip()
    if text[:1] in ("c", "C"):
        text = text[1:]
    return int(text)


def check_int64(value: int, what: str, minimum: int = INT64_MIN) -> int:
    """`value` when it fits the 64-bit integers ids and cameras are stored as, else a clear error
    (SQLite and faiss would fail with an overflow deep inside)."""
    if not minimum <= int(value) <= INT64_MAX:
        raise KeyreidError(f"{what}: {value} is out of range ({minimum} to {INT64_MAX}, 64-bit integers)")
    return int(value)


def _backend(name: str):
    try:
        return BACKENDS.get(name)
    except KeyError:
        raise KeyreidError(f"unknown index backend {name!r}; known: {BACKENDS.names()}") from None


# ---------------------------------------------------------------------- one writer at a time
@contextmanager
def index_lock(folder: Path, wait_s: float = WRITE_WAIT_S,
               waiting: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Hold INDEX's writer lock for the block (the folder must exist). Another holder is waited
    for up to `wait_s` seconds (`waiting` is told once that we wait), then LockedError."""
    folder = Path(folder)
    busy = (f"{folder}: another keyreid process is writing this index (an index build/add/remove, or keyreid "
            f"serve's gallery routes) and did not finish within {wait_s:g} s; run again when it has finished "
            "(--wait SECONDS waits longer)")
    held = ExitStack()
    try:
        held.enter_context(file_lock(folder / LOCK, 0, busy))
    except LockedError:
        if wait_s <= 0:
            raise
        if waiting is not None:
            waiting(f"{folder}: another keyreid process is writing this index; waiting up to {wait_s:g} s for it")
        held.enter_context(file_lock(folder / LOCK, wait_s, busy))
    with held:
        yield


def _waiting_note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def stale_files(folder: Path, manifest: Optional[dict]) -> list[Path]:
    """What killed writers left in `folder`: our temporaries, and (faiss, or no index yet) the
    generation files the manifest does not name. Only safe to delete under the writer lock."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    named: set = set()
    generations = manifest is None or manifest.get("backend") == "faiss"
    if manifest is not None and isinstance(manifest.get("files"), dict):
        named = set(manifest["files"].values())
    out = []
    for p in folder.iterdir():
        if _OUR_TMP.match(p.name) and p.is_file():
            out.append(p)
        elif generations and _GENERATION.match(p.name) and p.name not in named and p.is_file():
            out.append(p)
    return out


def _remove_stale(folder: Path, manifest: Optional[dict]) -> None:
    for p in stale_files(folder, manifest):
        p.unlink(missing_ok=True)


def _build_target_problem(out: Path) -> Optional[str]:
    """Why `out` cannot receive a new index, or None. A folder holding only our lock file and what
    a killed build of ours left (temporaries, generation files, local Qdrant storage, a manifest
    marked unfinished) may be built into again: the lock file proves the build that made the
    rest found the folder empty."""
    if (out / MANIFEST).exists():
        try:
            unfinished = bool(json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("building"))
        except (OSError, ValueError, AttributeError):
            unfinished = False
        if not unfinished or not (out / LOCK).exists():
            return "already holds an index; add to it with `keyreid index add`, or choose another -o"
    if not out.exists():
        return None
    if not out.is_dir():
        return "exists and is not an empty folder; choose another -o"
    names = {p.name for p in out.iterdir()}
    if not names:
        return None
    ours = LOCK in names and all(n in (LOCK, MANIFEST, "qdrant") or _OUR_TMP.match(n) or _GENERATION.match(n)
                                 for n in names)
    return None if ours else "exists and is not an empty folder; choose another -o"


def _clear_killed_build(out: Path) -> None:
    """Under the lock: remove what a killed `index build` left in `out` (see _build_target_problem)."""
    manifest = None
    if (out / MANIFEST).exists():
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        url = (manifest.get("params") or {}).get("url")
        if manifest.get("backend") == "qdrant" and url:
            # the build writes its manifest only after it created this collection (and it refuses
            # to reuse an existing one), so the collection is the killed build's own
            from keyreid.search.qdrant_backend import _client

            client = _client(out, url)
            try:
                if client.collection_exists(manifest["params"]["collection"]):
                    client.delete_collection(manifest["params"]["collection"])
            finally:
                client.close()
    if (out / "qdrant").is_dir():
        shutil.rmtree(out / "qdrant")
    _remove_stale(out, None)
    if manifest is not None:
        (out / MANIFEST).unlink()


def features_digest(fs, camera_shift: int = 0) -> str:
    """What identifies a features folder's images: the model and every row's metadata (the same
    images embedded by the same model give the same vectors, so vectors need not be hashed).
    `camera_shift` is added to every camera first (see _legacy_digest)."""
    h = hashlib.sha256(str(fs.manifest["fingerprint"]).encode())
    for r in fs.rows:
        row = {k: r.get(k) for k in META_KEYS}
        if camera_shift and row["camid"] is not None:
            row["camid"] += camera_shift
        h.update(json.dumps(row, sort_keys=True).encode() + b"\n")
    return h.hexdigest()


def _legacy_digest(fs) -> Optional[str]:
    """The digest an index from before the camera rule recorded for these images: a dataset
    adapter's rows then held its 0-based camera ids (README "Cameras")."""
    from keyreid.data.datasets.base import LEGACY_CAMERA_BASE

    source = fs.manifest.get("source") or {}
    base = LEGACY_CAMERA_BASE.get(source.get("dataset"), 0) if source.get("kind") == "dataset" else 0
    return features_digest(fs, -base) if base else None


def _source(folder: Path, digest: str, ids: np.ndarray) -> dict:
    return {"features": str(Path(folder).resolve()), "digest": digest, "count": int(len(ids)),
            "first_id": int(ids.min()) if len(ids) else None, "last_id": int(ids.max()) if len(ids) else None}


def build_index(out: Path, features: list[Path], backend: str = "faiss", index_type: str = "flat",
                wait_s: float = WRITE_WAIT_S, allow_duplicates: bool = False, **opts) -> GalleryIndex:
    """A new index at `out` over every row of the features folders (all from one model).

    `out` must not hold an index already (use `add`), so nothing of the user's is replaced; what a
    killed build of ours left there is cleared first."""
    from keyreid.search.features import read_features

    out = Path(out)
    if index_type not in INDEX_TYPES:
        raise KeyreidError(f"--type must be one of {INDEX_TYPES}, got {index_type!r}")
    problem = _build_target_problem(out)
    if problem:
        raise DataError(out, problem)
    if not features:
        raise KeyreidError("give at least one FEATURES folder")
    sets = [read_features(Path(f)) for f in features]
    first = sets[0].manifest
    for f, s in zip(features[1:], sets[1:]):
        check_vectors(first, np.zeros((0, first["dim"]), np.float32), s.manifest["fingerprint"], f"features {f}")
        if s.manifest["dim"] != first["dim"]:
            raise SearchIndexError(f"features {f} are {s.manifest['dim']}-d, {features[0]} are {first['dim']}-d")
    digests = [features_digest(s) for s in sets]
    if not allow_duplicates:
        for j, d in enumerate(digests):
            if d in digests[:j]:
                raise DataError(features[j], f"holds the same images as {features[digests.index(d)]}; building from "
                                             "both would duplicate every image (--allow-duplicates to do it anyway)")
    vectors = np.concatenate([s.vectors for s in sets]) if len(sets) > 1 else sets[0].vectors
    rows = [r for s in sets for r in s.rows]
    extra = {"checkpoint": first.get("checkpoint"), "flip": bool(first.get("flip", False)),
             "model": first.get("model", {}), "building": True}
    out.mkdir(parents=True, exist_ok=True)
    with index_lock(out, wait_s, _waiting_note):
        problem = _build_target_problem(out)  # another build may have finished while we waited
        if problem:
            raise DataError(out, problem)
        _clear_killed_build(out)
        index = _backend(backend).create(out, index_type=index_type, fingerprint=first["fingerprint"],
                                         dim=first["dim"], normalized=first["normalized"],
                                         distance=first["distance"], vectors=vectors, extra=extra, **opts)
        ids = add_calibrated(index, vectors, rows_metadata(rows), first["fingerprint"])
        start, sources = 0, []
        for f, s, d in zip(features, sets, digests):
            sources.append(_source(f, d, ids[start:start + len(s.rows)]))
            start += len(s.rows)
        index.manifest["sources"] = sources
        index.manifest.pop("building", None)
        index.save()
    return index


def add_calibrated(index: GalleryIndex, vectors: np.ndarray, metadata: list[dict], fingerprint: str,
                   held_out: int = 500) -> np.ndarray:
    """Fill a new index; for an approximate one, hold a random sample of the gallery back, tune
    the search on it against exact search over the rest (so the recall printed is that of queries
    the index has never seen), then add the sample too. Ids follow row order either way."""
    ids = index.assign_ids(len(vectors), None)
    n_out = min(held_out, len(vectors) // 10) if getattr(index, "approximate", False) else 0
    if n_out == 0:
        index.add(vectors, metadata, fingerprint, ids=ids)
        index.calibrate(vectors[:0], vectors[:0], ids[:0])
        return ids
    out = np.zeros(len(vectors), bool)
    out[np.random.default_rng(1).choice(len(vectors), n_out, replace=False)] = True
    rest = np.flatnonzero(~out)
    index.add(vectors[rest], [metadata[i] for i in rest], fingerprint, ids=ids[rest])
    sample = np.flatnonzero(out)
    index.calibrate(np.asarray(vectors[sample]), np.asarray(vectors[rest]), ids[rest])
    index.add(vectors[sample], [metadata[i] for i in sample], fingerprint, ids=ids[sample])
    return ids


def add_features(index: GalleryIndex, features: Path, allow_duplicates: bool = False) -> np.ndarray:
    """Add a features folder to an open index and save. A folder whose images the index already
    holds (same digest, recorded in the manifest's sources) is refused unless allow_duplicates.
    The caller holds the writer lock (see add_to_index)."""
    from keyreid.search.features import read_features

    fs = read_features(Path(features))
    digest = features_digest(fs)
    known = {digest, _legacy_digest(fs)} - {None}
    seen = [s for s in index.manifest.get("sources") or [] if s.get("digest") in known]
    if seen and not allow_duplicates:
        s = seen[0]
        where = f" as ids {s['first_id']}..{s['last_id']}" if s.get("first_id") is not None else ""
        raise DataError(features, f"its images are already in the index (added from {s['features']}{where}); "
                                  "adding them again would duplicate every image (--allow-duplicates to do it anyway)")
    ids = index.add(fs.vectors, rows_metadata(fs.rows), fs.manifest["fingerprint"])  # cameras as named
    index.manifest["sources"] = list(index.manifest.get("sources") or []) + [_source(features, digest, ids)]
    index.save()
    return ids


def add_to_index(path: Path, features: Path, qdrant_url: Optional[str] = None, wait_s: float = WRITE_WAIT_S,
                 allow_duplicates: bool = False) -> tuple[np.ndarray, int]:
    """`keyreid index add`: under the writer lock, the index as it is on disk now gets the folder;
    returns the new ids and the index's new size."""
    path = Path(path)
    read_index_manifest(path)  # a clear error before any lock file is made
    with index_lock(path, wait_s, _waiting_note):
        index = open_index(path, qdrant_url, locked=True)
        try:
            ids = add_features(index, features, allow_duplicates)
            return ids, len(index)
        finally:
            index.close()


def remove_from_index(path: Path, ids: Optional[list[int]] = None, cameras: Optional[list[int]] = None,
                      qdrant_url: Optional[str] = None, wait_s: float = WRITE_WAIT_S) -> tuple[int, int]:
    """`keyreid index remove` under the writer lock: (vectors removed, vectors left)."""
    path = Path(path)
    read_index_manifest(path)
    with index_lock(path, wait_s, _waiting_note):
        index = open_index(path, qdrant_url, locked=True)
        try:
            n = index.remove(ids=ids, cameras=cameras)
            index.save()
            return n, len(index)
        finally:
            index.close()


def open_index(path: Path, qdrant_url: Optional[str] = None, locked: bool = False) -> GalleryIndex:
    """Open an index lazily: only the manifest is read now, vectors and metadata when needed.

    `locked`: the caller holds the writer lock, so what a killed writer left is cleared and
    undone now. A reader that finds such leftovers does the same when it can take the lock at
    once (nobody is writing); otherwise it opens the index as it is."""
    path = Path(path)
    manifest = read_index_manifest(path)
    if manifest.get("building"):
        raise DataError(path, "holds an unfinished `keyreid index build` (was it killed?); run the same build "
                              "again to redo it")
    if not locked and (manifest.get("pending") or stale_files(path, manifest)):
        try:
            with index_lock(path, 0):
                return open_index(path, qdrant_url, locked=True)
        except LockedError:
            pass  # a writer is at work: its changes count once it saves
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise  # a read-only index: left as it is
    if locked:
        _remove_stale(path, manifest)
    index = _backend(manifest["backend"]).open(path, manifest, qdrant_url=qdrant_url)
    if "camera_base" not in index.manifest:   # before the camera rule: what its cameras mean
        settle_legacy_cameras(index)
    if locked and manifest.get("pending"):
        index.recover()
    return index


# ---------------------------------------------------------------------- indexes from before the camera rule
_NAMED_CAMERA = re.compile(r"(?:^|_)c(\d+)")   # Market / Duke / VeRi names: 0301_c2s1_..., 0002_c002_...


def _source_camera_base(index: GalleryIndex, source: dict) -> int:
    """How an index from before the camera rule stored the cameras of one of its sources: as the
    features folder it came from stored them (its manifest says whether a dataset adapter or
    --pattern wrote it, see keyreid.search.features.stored_camera_base). When that folder is gone,
    from the rows' file names: cameras that are everywhere one less than the names' ``c<N>``
    were stored 0-based."""
    from keyreid.search.features import feature_folders, read_manifest, stored_camera_base

    try:
        m = read_manifest(feature_folders(Path(source["features"]))[0])
        if "camera_base" not in m:
            return stored_camera_base(m)
    except (DataError, KeyError, TypeError, OSError):
        pass
    lo, hi = source.get("first_id"), source.get("last_id")
    if lo is None or hi is None:
        return 0
    rows = []
    for i in range(int(lo), min(int(hi), int(lo) + 199) + 1):
        try:
            rows += index.get_metadata([i])
        except (SearchIndexError, KeyError):
            continue
        if len(rows) >= 50:
            break
    pairs = [(r["camid"], _NAMED_CAMERA.search(Path(str(r.get("path") or "")).name)) for r in rows
             if r.get("camid") is not None]
    pairs = [(cam, int(m.group(1))) for cam, m in pairs if m is not None]
    return 1 if pairs and all(cam == named - 1 for cam, named in pairs) else 0


def settle_legacy_cameras(index: GalleryIndex) -> int:
    """Work out the camera_base of an index written before the camera rule (README "Cameras")
    from its sources; returns it. Sources that stored cameras differently (an adapter's features
    built, --pattern features added) are made alike in memory where the backend can (faiss),
    else the numbering of most of the images is taken, with a warning."""
    index._camera_base = 0
    parts = [(s, _source_camera_base(index, s)) for s in index.manifest.get("sources") or []
             if s.get("first_id") is not None]
    bases = {b for _, b in parts}
    if len(bases) <= 1:
        index._camera_base = bases.pop() if bases else 0
        return index._camera_base
    if index.rebase_cameras([(int(s["first_id"]), int(s["last_id"]), b) for s, b in parts if b]):
        return index._camera_base
    weight: dict[int, int] = {}
    for s, b in parts:
        weight[b] = weight.get(b, 0) + int(s.get("count") or 0)
    index._camera_base = max(sorted(weight), key=lambda b: weight[b])
    print(f"warning: {getattr(index, 'folder', 'the index')}: built before keyreid recorded its camera numbering, "
          "from features that numbered cameras differently; cameras are shown as most of its images' file names "
          "write them, the others may be off by one (build the index again to fix it)", file=sys.stderr, flush=True)
    return index._camera_base


__all__ = ["BACKENDS", "GalleryIndex", "Hit", "INDEX_TYPES", "INT64_MAX", "INT64_MIN", "LOCK", "SearchIndexError",
           "SearchFilter", "WRITE_WAIT_S", "add_calibrated", "add_features", "add_to_index", "check_int64",
           "exact_neighbours", "features_digest", "index_lock", "parse_camera", "recall_at_10", "remove_from_index",
           "settle_legacy_cameras",
           "build_index", "check_vectors", "new_manifest", "open_index", "read_index_manifest",
           "register_backend", "rows_metadata"]
