"""The embedded engine: faiss with 64-bit ids, metadata in a SQLite sidecar.

Index types
- flat: IndexIDMap2 over IndexFlatIP (normalised) / IndexFlatL2: exact search.
- ivf:  IndexIVFFlat (its own 64-bit ids, a hash-table direct map so vectors can be read back
        and removed); nlist ~ sqrt(N), nprobe chosen at build time as the smallest that reaches
        the target recall@10 against exact search on a held-out sample.
- hnsw: IndexIDMap2 over IndexHNSWFlat; efSearch chosen the same way. HNSW cannot delete, so
        `remove` rebuilds the graph from the remaining vectors.
- auto: flat up to AUTO_FLAT_MAX vectors, IVF above (see bench/search_speed.py for why).

Files and atomic saves: every save writes a new generation, ``vectors-<g>.faiss`` and
``metadata-<g>.sqlite`` (each through a temporary file and a rename), then the manifest naming
generation g, last. A crash anywhere before the manifest's rename leaves the previous manifest,
which names the previous generation's files, untouched: the index loads as it was. Files of
older generations are deleted only after the new manifest is in place.

Filters run inside faiss: the ids a SearchFilter keeps come from SQLite and restrict the search
through an IDSelectorBatch, so a filtered top-k is exact for flat indexes.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Optional

import faiss
import numpy as np

from keyreid.errors import DataError, KeyreidError
from keyreid.search.index import (MANIFEST, GalleryIndex, Hit, SearchFilter, SearchIndexError, check_vectors,
                                  new_manifest, register_backend)
from keyreid.search.metadata import MetadataStore
from keyreid.utils.io import atomic_write, atomic_write_text

AUTO_FLAT_MAX = 20_000
TARGET_RECALL = 0.95
NPROBE_STEPS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
EF_STEPS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
HELD_OUT = 500
SMALL_BATCH = 4  # up to this many queries run on one thread (see _one_thread_for)


@contextmanager
def _one_thread_for(nq: int):
    """A few queries run on one OpenMP thread: faiss parallelises over queries, so a single
    query gains nothing from a team of threads but pays its fork/join, which collapses when the
    CPUs are busy (20k x 512 flat, one query, machine loaded: 60 ms with 2 threads, 1.9 ms
    with 1). The setting is per calling thread, so concurrent searches do not disturb each other."""
    if nq > SMALL_BATCH:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def default_nlist(n: int) -> int:
    """A power of two near sqrt(N), with >= 39 training points per list (faiss's minimum)."""
    if n < 78:
        return 1
    target = min(math.sqrt(n), n / 39)
    return int(2 ** max(0, math.floor(math.log2(target))))


def exact_neighbours(vectors: np.ndarray, ids: np.ndarray, sample: np.ndarray, normalized: bool,
                     k: int = 11) -> np.ndarray:
    """Ids of the exact k nearest gallery vectors of each held-out row (brute force, chunked so
    no second copy of the gallery is made)."""
    best_s = np.full((len(sample), k), -np.inf, np.float32)
    best_i = np.zeros((len(sample), k), np.int64)
    q = vectors[sample]
    for s in range(0, len(vectors), 65536):
        block = vectors[s:s + 65536]
        if normalized:
            scores = q @ block.T
        else:
            scores = -(np.square(q).sum(1)[:, None] - 2 * q @ block.T + np.square(block).sum(1)[None])
        both_s = np.concatenate([best_s, scores], 1)
        both_i = np.concatenate([best_i, np.broadcast_to(ids[s:s + 65536], scores.shape)], 1)
        top = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(both_s, top, 1), np.take_along_axis(both_i, top, 1)
    return best_i


def recall_at_10(index: "FaissIndex", vectors: np.ndarray, ids: np.ndarray, sample: np.ndarray,
                 truth: np.ndarray) -> float:
    """recall@10 of `index` against the exact neighbours `truth` of the held-out rows `sample`
    (each query's own id left out of both lists, so finding itself earns nothing)."""
    hits = index.search(vectors[sample], 11)
    total = found = 0
    for q, (row, got) in enumerate(zip(truth, hits)):
        own = ids[sample[q]]
        want = [i for i in row.tolist() if i != own][:10]
        have = {h.id for h in got if h.id != own}
        found += len(set(want) & have)
        total += len(want)
    return found / max(total, 1)


@register_backend("faiss")
class FaissIndex(GalleryIndex):
    def __init__(self, folder: Path, manifest: dict, index=None, meta: Optional[MetadataStore] = None):
        self.folder = Path(folder)
        self.manifest = manifest
        self._index = index
        self._meta = meta
        self._dirty = index is not None
        self.build_report: dict = {}

    # ------------------------------------------------------------------ creation / opening
    @classmethod
    def create(cls, out: Path, *, index_type: str, fingerprint: str, dim: int, normalized: bool, distance: str,
               vectors: Optional[np.ndarray] = None, extra: Optional[dict] = None, nlist: Optional[int] = None,
               nprobe: Optional[int] = None, hnsw_m: int = 32, ef_search: Optional[int] = None,
               ef_construction: int = 64, **unused) -> "FaissIndex":
        if unused.get("qdrant_url"):
            raise KeyreidError("--qdrant-url is for --backend qdrant")
        n = 0 if vectors is None else len(vectors)
        chosen = index_type
        if index_type == "auto":
            chosen = "flat" if n <= AUTO_FLAT_MAX else "ivf"
        params: dict = {}
        metric = faiss.METRIC_INNER_PRODUCT if normalized else faiss.METRIC_L2
        if chosen == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim) if normalized else faiss.IndexFlatL2(dim))
        elif chosen == "ivf":
            params["nlist"] = int(nlist or default_nlist(n))
            if vectors is None or n < params["nlist"]:
                raise SearchIndexError(f"an IVF index with {params['nlist']} lists needs at least that many "
                                       f"vectors to train on (got {n}); use --type flat")
            quantizer = faiss.IndexFlatIP(dim) if normalized else faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], metric)
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
            rng = np.random.default_rng(0)
            train = vectors[np.sort(rng.choice(n, size=min(n, 64 * params["nlist"]), replace=False))]
            index.train(np.ascontiguousarray(train, dtype=np.float32))
            params["nprobe"] = int(nprobe) if nprobe else None
        elif chosen == "hnsw":
            params.update(M=int(hnsw_m), ef_construction=int(ef_construction),
                          ef_search=int(ef_search) if ef_search else None)
            inner = faiss.IndexHNSWFlat(dim, params["M"], metric)
            inner.hnsw.efConstruction = params["ef_construction"]
            index = faiss.IndexIDMap2(inner)
        else:
            raise KeyreidError(f"faiss index type must be flat, ivf, hnsw or auto, got {index_type!r}")
        manifest = new_manifest("faiss", chosen, fingerprint, dim, normalized, distance, params=params,
                                requested_type=index_type, generation=0, files=None, **(extra or {}))
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        return cls(out, manifest, index, MetadataStore())

    @classmethod
    def open(cls, folder: Path, manifest: dict, qdrant_url: Optional[str] = None) -> "FaissIndex":
        if qdrant_url:
            raise KeyreidError(f"{folder} is a faiss index; --qdrant-url is for qdrant indexes")
        files = manifest.get("files")
        if not isinstance(files, dict) or not {"vectors", "metadata"} <= set(files):
            raise DataError(Path(folder) / MANIFEST, "faiss index manifest lacks its file names")
        for f in files.values():
            if not (Path(folder) / f).is_file():
                raise DataError(Path(folder) / f, "named by the index manifest but missing; the index is damaged")
        return cls(folder, manifest)

    # ------------------------------------------------------------------ lazy parts
    @property
    def index(self):
        if self._index is None:
            path = self.folder / self.manifest["files"]["vectors"]
            try:
                self._index = faiss.read_index(str(path))
            except RuntimeError as e:
                raise DataError(path, f"cannot be read as a faiss index ({str(e).splitlines()[0]})") from None
            self._apply_search_params()
        return self._index

    @property
    def meta(self) -> MetadataStore:
        if self._meta is None:
            self._meta = MetadataStore(self.folder / self.manifest["files"]["metadata"])
        return self._meta

    def _hnsw(self):
        return faiss.downcast_index(self.index.index)

    def _apply_search_params(self) -> None:
        p = self.manifest.get("params", {})
        if self.manifest["type"] == "ivf" and p.get("nprobe"):
            self._index.nprobe = int(p["nprobe"])
        if self.manifest["type"] == "hnsw" and p.get("ef_search"):
            faiss.downcast_index(self._index.index).hnsw.efSearch = int(p["ef_search"])

    def _params(self, sel=None):
        p = self.manifest.get("params", {})
        if self.manifest["type"] == "ivf":
            return faiss.SearchParametersIVF(sel=sel, nprobe=int(p.get("nprobe") or 1))
        if self.manifest["type"] == "hnsw":
            return faiss.SearchParametersHNSW(sel=sel, efSearch=int(p.get("ef_search") or 16))
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    # ------------------------------------------------------------------ the interface
    def search(self, queries: np.ndarray, top_k: int, filt: Optional[SearchFilter] = None) -> list[list[Hit]]:
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.manifest["dim"]:
            raise SearchIndexError(f"queries have shape {tuple(q.shape)}; the index holds "
                                   f"{self.manifest['dim']}-d vectors")
        if top_k < 1:
            raise KeyreidError("--top-k must be at least 1")
        sel = keep = None
        if filt is not None and not filt.is_empty():
            keep = self.meta.filtered_ids(filt)
            if len(keep) == 0:
                return [[] for _ in q]
            sel = faiss.IDSelectorBatch(keep)
        k = min(top_k, len(self) if keep is None else len(keep))
        if k == 0:
            return [[] for _ in q]
        index = self.index
        with _one_thread_for(len(q)):
            scores, ids = index.search(q, k, params=self._params(sel))
        if self.manifest["metric"] == "l2":
            scores = -scores  # higher is better in every backend
        wanted = np.unique(ids[ids >= 0])
        meta = dict(zip(wanted.tolist(), self.meta.get(wanted)))
        out = []
        for srow, irow in zip(scores, ids):
            hits = []
            for s, i in zip(srow.tolist(), irow.tolist()):
                if i < 0 or meta.get(i) is None:
                    continue
                m = meta[i]
                hits.append(Hit(id=i, score=float(s), path=m["path"], camid=m["camid"], pid=m["pid"],
                                timestamp=m["timestamp"], track=m["track"]))
            out.append(hits)
        return out

    def add(self, vectors: np.ndarray, metadata: list[dict], fingerprint: str,
            ids: Optional[np.ndarray] = None) -> np.ndarray:
        v = check_vectors(self.manifest, vectors, fingerprint)
        if len(metadata) != len(v):
            raise SearchIndexError(f"{len(metadata)} metadata rows for {len(v)} vectors")
        ids = self.assign_ids(len(v), ids)
        if len(v) == 0:
            return ids
        self.meta.add(ids, metadata)  # refuses ids already present, before faiss changes
        self.index.add_with_ids(v, ids)
        self._after_add(ids)
        self._dirty = True
        return ids

    def remove(self, ids: Optional[Iterable[int]] = None, cameras: Optional[Iterable[int]] = None) -> int:
        doomed = set(int(i) for i in (ids or []))
        if cameras is not None:
            doomed |= set(self.meta.ids_with_cameras(cameras).tolist())
        doomed = np.array(sorted(self.meta.existing(doomed)), dtype=np.int64)
        if len(doomed) == 0:
            return 0
        if self.manifest["type"] == "hnsw":
            self._rebuild_hnsw_without(doomed)
        else:
            # the IVF hash-table direct map only removes through an IDSelectorArray
            sel = faiss.IDSelectorArray(len(doomed), faiss.swig_ptr(doomed))
            removed = self.index.remove_ids(sel)
            if removed != len(doomed):
                raise SearchIndexError(f"faiss removed {removed} of {len(doomed)} vectors")
        self.meta.delete(doomed)
        self.manifest["count"] = int(self.manifest["count"]) - len(doomed)
        self._dirty = True
        return len(doomed)

    def _rebuild_hnsw_without(self, doomed: np.ndarray) -> None:
        keep = np.setdiff1d(self.meta.all_ids(), doomed)
        vectors = self.get_vectors(keep) if len(keep) else np.zeros((0, self.manifest["dim"]), np.float32)
        old = self._hnsw()
        inner = faiss.IndexHNSWFlat(self.manifest["dim"], self.manifest["params"]["M"], old.metric_type)
        inner.hnsw.efConstruction = self.manifest["params"]["ef_construction"]
        index = faiss.IndexIDMap2(inner)
        if len(keep):
            index.add_with_ids(vectors, keep)
        self._index = index
        self._apply_search_params()

    def get_vectors(self, ids: Iterable[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        out = np.empty((len(ids), self.manifest["dim"]), np.float32)
        for row, i in enumerate(ids):
            try:
                out[row] = self.index.reconstruct(i)
            except RuntimeError:
                raise SearchIndexError(f"id {i} is not in the index") from None
        return out

    def get_metadata(self, ids: Iterable[int]) -> list[dict]:
        ids = [int(i) for i in ids]
        rows = self.meta.get(ids)
        missing = [i for i, r in zip(ids, rows) if r is None]
        if missing:
            raise SearchIndexError(f"ids not in the index: {missing[:5]}")
        return rows

    def calibrate(self, vectors: np.ndarray, ids: np.ndarray, target: float = TARGET_RECALL) -> dict:
        """For ivf / hnsw: pick the smallest nprobe / efSearch reaching `target` recall@10 on a
        held-out sample (unless given), and report the recall reached."""
        kind = self.manifest["type"]
        if kind == "flat" or len(vectors) < 2:
            self.build_report = {"type": kind, "recall@10": 1.0, "exact": True}
            return self.build_report
        rng = np.random.default_rng(1)
        sample = np.sort(rng.choice(len(vectors), size=min(HELD_OUT, len(vectors)), replace=False))
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        p = self.manifest["params"]
        key, steps = ("nprobe", NPROBE_STEPS) if kind == "ivf" else ("ef_search", EF_STEPS)
        if kind == "ivf":
            steps = [s for s in steps if s < p["nlist"]] + [p["nlist"]]
        truth = exact_neighbours(vectors, ids, sample, self.manifest["normalized"])
        tried = {}
        for value in ([p[key]] if p.get(key) else steps):
            p[key] = int(value)
            self._apply_search_params()
            tried[int(value)] = recall_at_10(self, vectors, ids, sample, truth)
            if tried[int(value)] >= target:
                break
        self._dirty = True
        self.build_report = {"type": kind, key: p[key], "recall@10": tried[p[key]], "held_out": len(sample),
                             "tried": tried}
        self.manifest["build_recall@10"] = tried[p[key]]
        return self.build_report

    def save(self) -> None:
        if not self._dirty:
            return
        g = int(self.manifest.get("generation") or 0) + 1
        files = {"vectors": f"vectors-{g:06d}.faiss", "metadata": f"metadata-{g:06d}.sqlite"}
        index = self.index
        atomic_write(self.folder / files["vectors"], lambda tmp: faiss.write_index(index, tmp))
        self.meta.save_to(self.folder / files["metadata"])
        manifest = dict(self.manifest, generation=g, files=files)
        atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=1))  # the commit point
        self.manifest = manifest
        self._dirty = False
        for old in list(self.folder.glob("vectors-*.faiss")) + list(self.folder.glob("metadata-*.sqlite")):
            if old.name not in files.values():
                old.unlink()

    def info(self) -> dict:
        out = dict(self.manifest)
        out["bytes"] = sum((self.folder / f).stat().st_size for f in (self.manifest.get("files") or {}).values()
                           if (self.folder / f).exists())
        return out


__all__ = ["AUTO_FLAT_MAX", "FaissIndex", "default_nlist", "exact_neighbours", "recall_at_10"]
