"""One gallery index interface, one file per engine (faiss_backend.py, qdrant_backend.py).

INDEX/ is a folder with ``manifest.json`` (format keyreid-index) plus whatever the backend keeps
there. Scores are higher-is-better in every backend: cosine similarity (inner product of unit
vectors) for normalised indexes, minus the squared L2 distance otherwise.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from keyreid.errors import DataError, KeyreidError
from keyreid.utils.registry import Registry

FORMAT = "keyreid-index"
VERSION = 1
MANIFEST = "manifest.json"
INDEX_TYPES = ("flat", "ivf", "hnsw", "pq", "auto")
NORM_TOLERANCE = 1e-3  # float16 storage keeps unit norms to ~1e-4

BACKENDS = Registry("index backend", builtin=["keyreid.search.faiss_backend",
                                              "keyreid.search.qdrant_backend"])
register_backend = BACKENDS.register


class SearchIndexError(KeyreidError):
    """A problem with an index or with what is put into it."""


@dataclass
class SearchFilter:
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

    def close(self) -> None:
        """Release files or connections (Qdrant's local mode locks its folder while open)."""

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
            "normalized": bool(normalized), "distance": distance, "count": 0, "next_id": 0, **extra}


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


def _backend(name: str):
    try:
        return BACKENDS.get(name)
    except KeyError:
        raise KeyreidError(f"unknown index backend {name!r}; known: {BACKENDS.names()}") from None


def build_index(out: Path, features: list[Path], backend: str = "faiss", index_type: str = "flat",
                **opts) -> GalleryIndex:
    """A new index at `out` over every row of the features folders (all from one model).

    `out` must not hold an index already (use `add`), so nothing of the user's is replaced."""
    from keyreid.search.features import read_features

    out = Path(out)
    if index_type not in INDEX_TYPES:
        raise KeyreidError(f"--type must be one of {INDEX_TYPES}, got {index_type!r}")
    if (out / MANIFEST).exists():
        raise DataError(out, "already holds an index; add to it with `keyreid index add`, or choose another -o")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(out, "exists and is not an empty folder; choose another -o")
    if not features:
        raise KeyreidError("give at least one FEATURES folder")
    sets = [read_features(Path(f)) for f in features]
    first = sets[0].manifest
    for f, s in zip(features[1:], sets[1:]):
        check_vectors(first, np.zeros((0, first["dim"]), np.float32), s.manifest["fingerprint"], f"features {f}")
        if s.manifest["dim"] != first["dim"]:
            raise SearchIndexError(f"features {f} are {s.manifest['dim']}-d, {features[0]} are {first['dim']}-d")
    vectors = np.concatenate([s.vectors for s in sets]) if len(sets) > 1 else sets[0].vectors
    rows = [r for s in sets for r in s.rows]
    extra = {"checkpoint": first.get("checkpoint"), "flip": bool(first.get("flip", False)),
             "model": first.get("model", {})}
    index = _backend(backend).create(out, index_type=index_type, fingerprint=first["fingerprint"],
                                     dim=first["dim"], normalized=first["normalized"],
                                     distance=first["distance"], vectors=vectors, extra=extra, **opts)
    add_calibrated(index, vectors, rows_metadata(rows), first["fingerprint"])
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


def add_features(index: GalleryIndex, features: Path) -> np.ndarray:
    from keyreid.search.features import read_features

    fs = read_features(Path(features))
    ids = index.add(fs.vectors, rows_metadata(fs.rows), fs.manifest["fingerprint"])
    index.save()
    return ids


def open_index(path: Path, qdrant_url: Optional[str] = None) -> GalleryIndex:
    """Open an index lazily: only the manifest is read now, vectors and metadata when needed."""
    manifest = read_index_manifest(Path(path))
    return _backend(manifest["backend"]).open(Path(path), manifest, qdrant_url=qdrant_url)


__all__ = ["BACKENDS", "GalleryIndex", "Hit", "INDEX_TYPES", "SearchIndexError", "SearchFilter", "add_calibrated", "add_features",
           "exact_neighbours", "recall_at_10",
           "build_index", "check_vectors", "new_manifest", "open_index", "read_index_manifest",
           "register_backend", "rows_metadata"]
