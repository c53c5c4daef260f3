"""The embedded engine: faiss with 64-bit ids, metadata in a SQLite sidecar.

Index types
- flat: IndexIDMap2 over IndexFlatIP (normalised) / IndexFlatL2: exact search.
- ivf:  IndexIVFFlat (its own 64-bit ids, a hash-table direct map so vectors can be read back
        and removed); nlist ~ sqrt(N), nprobe chosen at build time as the smallest that reaches
        the target recall@10 against exact search on a held-out sample.
- hnsw: IndexIDMap2 over IndexHNSWFlat, M 32 and efConstruction 40 by default; efSearch chosen
        the same way. M must stay well above the size of an identity's cluster: the graph's
        2M level-0 links otherwise stay inside clusters and the search cannot leave them (200k
        clustered vectors, efSearch 256: recall@10 0.887 with M 16, 0.968 with M 24; the build
        costs about the same, efConstruction 40 keeps it to minutes at 1M).
        Vectors are stored in float32, so scores are exact for the neighbours found. HNSW cannot
        delete, so `remove` rebuilds the graph from the remaining vectors (minutes at 1M).
- pq:   IndexIDMap2 over IndexRefineFlat(IndexPQFastScan): every vector as a 4-bit product-
        quantised code (dim / 8 sub-quantisers, capped at 64: 32 bytes per vector), scanned in full with
        faiss's SIMD fast-scan kernels, then the best k_factor x k candidates re-scored exactly
        from the float32 copy; k_factor chosen at build time like nprobe. No coarse partition
        to miss an identity's scattered images, so recall stays high where IVF and HNSW lose it
        (bench, 1M clustered 512-d vectors: recall@10 1.000 at 1.7 ms per query, 14 s build,
        against HNSW M32 0.872 at 16 ms after a 16-minute build). Fast-scan ignores faiss ID
        selectors, so filters run here: exact over the kept vectors when they are few, else an
        oversampled unfiltered search cut to the kept ids (exact fallback for short rows).
        Fast-scan cannot delete either: `remove` re-adds the remaining vectors to the trained
        quantiser (seconds at 1M).
- auto: flat up to AUTO_FLAT_MAX vectors, pq above. IVF does not suit re-ID galleries: an
        identity's images share only part of their direction, so k-means scatters them over many
        lists (bench, 1M clustered vectors: recall@10 0.888 with 512 of 4096 lists probed).

Files and atomic saves: every save writes a new generation, ``vectors-<g>.faiss`` and
``metadata-<g>.sqlite`` (each through a temporary file and a rename), then the manifest naming
generation g, last. A crash anywhere before the manifest's rename leaves the previous manifest,
which names the previous generation's files, untouched: the index loads as it was. Files of
older generations are deleted only after the new manifest is in place.

Filters run inside faiss: the ids a SearchFilter keeps come from SQLite and restrict the search
through an IDSelectorBatch, so a filtered top-k is exact for flat indexes.
"""

from __future__ import annotations

import errno
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Optional

import faiss
import numpy as np

from keyreid.errors import DataError, KeyreidError
from keyreid.search.index import (MANIFEST, GalleryIndex, Hit, SearchFilter, SearchIndexError, check_vectors,
                                  exact_neighbours, new_manifest, recall_at_10, register_backend)
from keyreid.search.metadata import MetadataStore
from keyreid.utils.io import atomic_write, atomic_write_text

AUTO_FLAT_MAX = 20_000
TARGET_RECALL = 0.95
# tuning stops at the first setting that clears target + margin on the held-out sample: 500
# queries estimate recall to about +-0.005, and stopping at the first crossing favours lucky
# estimates (bench: 0.952 on the sample, 0.938 on fresh queries without the margin)
TUNE_MARGIN = 0.01
K_FACTOR_STEPS = (1, 2, 4, 8, 16, 32, 64)
PQ_MIN_TRAIN = 1_000  # 16 centroids per sub-quantiser: fewer vectors train a poor codebook
PQ_TRAIN_MAX = 100_000
EXACT_SUBSET_MAX = 50_000  # a filter keeping at most this many vectors is searched exactly (pq)
NPROBE_STEPS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
EF_STEPS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_ADD_CHUNK = 20_000  # graph inserts are slow (minutes at 1M): added in chunks behind a progress bar
HELD_OUT = 500
IVF_STORAGE = {"flat": None, "fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}
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


def default_pq_m(dim: int) -> int:
    """Sub-quantisers of a pq index: one per 8 dimensions (4-bit codes), even (fast-scan packs
    pairs), at most 64 so a 1M scan stays ~2 ms; dim must divide by it."""
    m = max(2, min(64, dim // 8))
    m -= m % 2
    while m > 2 and dim % m:
        m -= 2
    return m


def _pq_index(dim: int, m: int, metric, trained_base=None):
    """IDMap2 over Refine(PQ fast-scan): a new empty index; from `trained_base` (a trained
    IndexPQFastScan) the codebook is copied instead of learnt."""
    if trained_base is not None:
        base = faiss.clone_index(trained_base)
        base.reset()
    else:
        base = faiss.IndexPQFastScan(dim, m, 4, metric)
    refine = faiss.IndexRefineFlat(base)
    index = faiss.IndexIDMap2(refine)
    index.referenced_objects = [refine, base]  # keep the Python owners alive with the index
    return index


def default_nlist(n: int) -> int:
    """A power of two near min(N / 100, 4 sqrt(N)): about 100 vectors per list up to 160k,
    fewer lists above (k-means training time grows with lists x training points); never fewer
    than 39 training points per list (faiss's minimum)."""
    if n < 78:
        return 1
    target = min(n / 100, 4 * math.sqrt(n))
    return int(min(2 ** max(0, round(math.log2(max(target, 1)))), 2 ** math.floor(math.log2(n / 39))))


def _write_faiss(index, tmp: str, path: Path) -> None:
    """faiss.write_index, its C++ write errors as Python ones: a full disk becomes the OSError
    atomic_write reports as one line (faiss says it only in its message)."""
    try:
        faiss.write_index(index, tmp)
    except RuntimeError as e:
        text = str(e)
        for code in (errno.ENOSPC, errno.EDQUOT):
            if os.strerror(code) in text:
                raise OSError(code, os.strerror(code), tmp) from None
        raise SearchIndexError(f"{path}: faiss could not write the index ({text.splitlines()[0][-300:]})") from None


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
               nprobe: Optional[int] = None, storage: Optional[str] = None, hnsw_m: int = HNSW_M,
               ef_search: Optional[int] = None, ef_construction: int = HNSW_EF_CONSTRUCTION,
               pq_m: Optional[int] = None, k_factor: Optional[int] = None, **unused) -> "FaissIndex":
        if unused.get("qdrant_url"):
            raise KeyreidError("--qdrant-url is for --backend qdrant")
        n = 0 if vectors is None else len(vectors)
        chosen = index_type
        if index_type == "auto":
            chosen = "flat" if n <= AUTO_FLAT_MAX else "pq"
        if storage is not None and chosen != "ivf":
            raise KeyreidError(f"--ivf-storage is for IVF indexes; this index is {chosen}")
        params: dict = {}
        metric = faiss.METRIC_INNER_PRODUCT if normalized else faiss.METRIC_L2
        if chosen == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim) if normalized else faiss.IndexFlatL2(dim))
        elif chosen == "ivf":
            params["nlist"] = int(nlist or default_nlist(n))
            if vectors is None or n < params["nlist"]:
                raise SearchIndexError(f"an IVF index with {params['nlist']} lists needs at least that many "
                                       f"vectors to train on (got {n}); use --type flat")
            params["storage"] = storage or "flat"
            if params["storage"] not in IVF_STORAGE:
                raise KeyreidError(f"IVF storage must be one of {sorted(IVF_STORAGE)}, got {storage!r}")
            quantizer = faiss.IndexFlatIP(dim) if normalized else faiss.IndexFlatL2(dim)
            if params["storage"] == "flat":
                index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], metric)
            else:  # fewer bytes to scan per vector: faster probes, scores to ~1e-3
                index = faiss.IndexIVFScalarQuantizer(quantizer, dim, params["nlist"], IVF_STORAGE[params["storage"]],
                                                      metric)
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
            index.cp.niter = 12  # k-means dominates the build; more iterations gained no recall in bench/
            rng = np.random.default_rng(0)
            train = vectors[np.sort(rng.choice(n, size=min(n, 40 * params["nlist"]), replace=False))]
            index.train(np.ascontiguousarray(train, dtype=np.float32))
            params["nprobe"] = int(nprobe) if nprobe else None
        elif chosen == "hnsw":
            params.update(M=int(hnsw_m), ef_construction=int(ef_construction),
                          ef_search=int(ef_search) if ef_search else None)
            inner = faiss.IndexHNSWFlat(dim, params["M"], metric)
            inner.hnsw.efConstruction = params["ef_construction"]
            index = faiss.IndexIDMap2(inner)
        elif chosen == "pq":
            m = int(pq_m or default_pq_m(dim))
            if m < 2 or m % 2 or dim % m:
                raise KeyreidError(f"--pq-m {m}: must be even and divide the dimension {dim}")
            if vectors is None or n < PQ_MIN_TRAIN:
                raise SearchIndexError(f"a pq index learns its codebook from the gallery and needs at least "
                                       f"{PQ_MIN_TRAIN} vectors (got {n}); use --type flat")
            params.update(pq_m=m, k_factor=int(k_factor) if k_factor else None)
            index = _pq_index(dim, m, metric)
            rng = np.random.default_rng(0)
            train = vectors[np.sort(rng.choice(n, size=min(n, PQ_TRAIN_MAX), replace=False))]
            index.train(np.ascontiguousarray(train, dtype=np.float32))
        else:
            raise KeyreidError(f"faiss index type must be flat, ivf, hnsw, pq or auto, got {index_type!r}")
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
        if self.manifest["type"] == "pq":
            faiss.downcast_index(self._index.index).k_factor = float(p.get("k_factor") or 1)

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
            keep = self.meta.filtered_ids(self.stored_filter(filt))
            if len(keep) == 0:
                return [[] for _ in q]
            sel = faiss.IDSelectorBatch(keep)
        k = min(top_k, len(self) if keep is None else len(keep))
        if k == 0:
            return [[] for _ in q]
        index = self.index
        with _one_thread_for(len(q)):
            if keep is not None and self.manifest["type"] == "pq":
                scores, ids = self._pq_filtered(q, k, keep)
            else:
                # faiss.contrib.torch_utils (imported by pytorch-metric-learning) replaces search with
                # a wrapper that has no `params`; the numpy original stays as search_numpy
                search = getattr(index, "search_numpy", index.search)
                scores, ids = search(q, k, params=self._params(sel))
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
                hits.append(Hit(id=i, score=float(s), path=m["path"], camid=self.shown_camera(m["camid"]),
                                pid=m["pid"], timestamp=m["timestamp"], track=m["track"]))
            out.append(hits)
        return out

    def _subset_exact(self, q: np.ndarray, k: int, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of `q` among the vectors `keep` (faiss's own convention: inner product,
        or squared L2 where lower is better)."""
        vecs = self.index.reconstruct_batch(keep)
        if self.manifest["metric"] == "l2":
            scores = -(np.sum(q * q, 1)[:, None] - 2 * q @ vecs.T + np.sum(vecs * vecs, 1)[None])
        else:
            scores = q @ vecs.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(scores, top, 1)
        return (-best if self.manifest["metric"] == "l2" else best), keep[top]

    def _pq_filtered(self, q: np.ndarray, k: int, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A filtered search on a pq index, whose fast-scan kernels ignore ID selectors: exact over
        the kept vectors when they are few; otherwise an unfiltered search deep enough that k kept
        ids are expected among its results twice over, cut to those ids, with the exact search for
        any row that still came up short."""
        keep = np.asarray(keep, dtype=np.int64)
        if len(keep) <= EXACT_SUBSET_MAX:
            return self._subset_exact(q, k, keep)
        n = len(self)
        depth = int(min(n, math.ceil(2 * k * n / len(keep)) + 16))
        search = getattr(self.index, "search_numpy", self.index.search)
        scores, ids = search(q, depth)
        inside = np.isin(ids, keep)
        out_s = np.full((len(q), k), -np.inf if self.manifest["metric"] != "l2" else np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            got = np.flatnonzero(inside[r])[:k]  # search results are sorted best first
            if len(got) < k:
                s1, i1 = self._subset_exact(q[r:r + 1], k, keep)
                out_s[r], out_i[r] = s1[0], i1[0]
            else:
                out_s[r], out_i[r] = scores[r, got], ids[r, got]
        return out_s, out_i

    def add(self, vectors: np.ndarray, metadata: list[dict], fingerprint: str,
            ids: Optional[np.ndarray] = None) -> np.ndarray:
        v = check_vectors(self.manifest, vectors, fingerprint)
        if len(metadata) != len(v):
            raise SearchIndexError(f"{len(metadata)} metadata rows for {len(v)} vectors")
        ids = self.assign_ids(len(v), ids)
        if len(v) == 0:
            return ids
        self.meta.add(ids, self.stored_metadata(metadata))  # refuses ids already present, before faiss changes
        self._add_to_faiss(v, ids)
        self._after_add(ids)
        self._dirty = True
        return ids

    def _add_to_faiss(self, v: np.ndarray, ids: np.ndarray) -> None:
        index = self.index
        if self.manifest["type"] != "hnsw" or len(v) <= HNSW_ADD_CHUNK:
            index.add_with_ids(v, ids)
            return
        from keyreid.utils.progress import progress_bar

        with progress_bar() as bar:
            task = bar.add_task("HNSW graph", total=len(v))
            for s in range(0, len(v), HNSW_ADD_CHUNK):
                index.add_with_ids(v[s:s + HNSW_ADD_CHUNK], ids[s:s + HNSW_ADD_CHUNK])
                bar.advance(task, min(HNSW_ADD_CHUNK, len(v) - s))

    def remove(self, ids: Optional[Iterable[int]] = None, cameras: Optional[Iterable[int]] = None) -> int:
        doomed = set(int(i) for i in (ids or []))
        if cameras is not None:
            doomed |= set(self.meta.ids_with_cameras(self.stored_cameras(cameras)).tolist())
        doomed = np.array(sorted(self.meta.existing(doomed)), dtype=np.int64)
        if len(doomed) == 0:
            return 0
        if self.manifest["type"] in ("hnsw", "pq"):
            self._rebuild_without(doomed)
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

    def _rebuild_without(self, doomed: np.ndarray) -> None:
        """HNSW and PQ fast-scan cannot delete: a new index of the same kind (the PQ codebook
        kept) gets the remaining vectors back under their ids."""
        keep = np.setdiff1d(self.meta.all_ids(), doomed)
        vectors = self.get_vectors(keep) if len(keep) else np.zeros((0, self.manifest["dim"]), np.float32)
        if self.manifest["type"] == "pq":
            refine = faiss.downcast_index(self.index.index)
            base = faiss.downcast_index(refine.base_index)
            index = _pq_index(self.manifest["dim"], self.manifest["params"]["pq_m"], base.metric_type,
                              trained_base=base)
        else:
            old = self._hnsw()
            inner = faiss.IndexHNSWFlat(self.manifest["dim"], self.manifest["params"]["M"], old.metric_type)
            inner.hnsw.efConstruction = self.manifest["params"]["ef_construction"]
            index = faiss.IndexIDMap2(inner)
        self._index = index
        self._apply_search_params()
        if len(keep):
            self._add_to_faiss(vectors, keep)

    def get_vectors(self, ids: Iterable[int]) -> np.ndarray:
        ids = np.asarray([int(i) for i in ids], dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.manifest["dim"]), np.float32)
        try:
            return self.index.reconstruct_batch(ids)
        except RuntimeError:
            missing = [int(i) for i in ids if not self.meta.existing([int(i)])]
            raise SearchIndexError(f"id {missing[0] if missing else ids[0]} is not in the index") from None

    def get_metadata(self, ids: Iterable[int]) -> list[dict]:
        ids = [int(i) for i in ids]
        rows = self.meta.get(ids)
        missing = [i for i, r in zip(ids, rows) if r is None]
        if missing:
            raise SearchIndexError(f"ids not in the index: {missing[:5]}")
        return [self.shown_metadata(r) for r in rows]

    def cameras(self) -> Optional[list[int]]:
        return sorted(self.shown_camera(c) for c in self.meta.cameras())

    def rebase_cameras(self, ranges: list[tuple[int, int, int]]) -> bool:
        self.meta.rebase_cameras(ranges)
        self._camera_base = 0
        return True

    @property
    def approximate(self) -> bool:
        return self.manifest["type"] != "flat"

    def calibrate(self, queries: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray,
                  target: float = TARGET_RECALL) -> dict:
        """For ivf / hnsw: pick the smallest nprobe / efSearch that reaches `target` recall@10
        against exact search for `queries` (held-out gallery vectors, not in the index yet), unless
        it was given, and report the recall reached."""
        kind = self.manifest["type"]
        if not self.approximate or len(queries) == 0:
            self.build_report = {"type": kind, "recall@10": 1.0, "exact": True}
            return self.build_report
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        p = self.manifest["params"]
        key, steps = {"ivf": ("nprobe", NPROBE_STEPS), "hnsw": ("ef_search", EF_STEPS),
                      "pq": ("k_factor", K_FACTOR_STEPS)}[kind]
        if kind == "ivf":
            steps = [s for s in steps if s < p["nlist"]] + [p["nlist"]]
        truth = exact_neighbours(np.ascontiguousarray(gallery, dtype=np.float32), gallery_ids, queries,
                                 self.manifest["normalized"])
        tried = {}
        for value in ([p[key]] if p.get(key) else steps):
            p[key] = int(value)
            self._apply_search_params()
            tried[int(value)] = recall_at_10(self, queries, truth)
            if tried[int(value)] >= target + TUNE_MARGIN:
                break
        self._dirty = True
        self.build_report = {"type": kind, key: p[key], "recall@10": tried[p[key]], "held_out": len(queries),
                             "tried": tried}
        self.manifest["build_recall@10"] = tried[p[key]]
        return self.build_report

    def save(self) -> None:
        if not self._dirty:
            return
        g = int(self.manifest.get("generation") or 0) + 1
        files = {"vectors": f"vectors-{g:06d}.faiss", "metadata": f"metadata-{g:06d}.sqlite"}
        index = self.index
        manifest = dict(self.manifest, generation=g, files=files, camera_base=self.camera_base)
        try:
            vectors = self.folder / files["vectors"]
            atomic_write(vectors, lambda tmp: _write_faiss(index, tmp, vectors))
            self.meta.save_to(self.folder / files["metadata"])
            atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=1))  # the commit point
        except BaseException:
            # the manifest (replaced last, by a rename) still names the previous generation: give
            # back the space this one took, e.g. on a full disk
            for f in files.values():
                (self.folder / f).unlink(missing_ok=True)
            raise
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


__all__ = ["AUTO_FLAT_MAX", "FaissIndex", "default_nlist"]
