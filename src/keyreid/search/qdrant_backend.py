"""The scale-out engine: Qdrant through qdrant-client, embedded (INDEX/qdrant, local mode) or a
server / cluster (`--qdrant-url`). Metadata lives in each point's payload and the filters
become Qdrant filters, with the same semantics as SearchFilter.keeps.

Distances: DOT on unit vectors for normalised indexes (Qdrant's COSINE would renormalise the
vectors and shift scores in the last bits), EUCLID otherwise, reported as minus the squared
distance like faiss. Type "flat" searches exactly (`exact=True`); "hnsw" uses Qdrant's graph.

Durability is Qdrant's own (its write-ahead log); INDEX/manifest.json (collection, url, count)
is replaced atomically on save, and a save is the commit point of every change since the last:
before points are upserted or deleted the manifest is rewritten with ``pending`` (the batch
tokens of the additions not yet saved, each point carrying its token in the payload), so a
writer killed at any moment leaves a manifest that says what to undo. `recover` (run by the
next writer, under the writer lock) deletes those points again and recounts the collection:
the index loads, counts what it holds and takes the rerun of the add.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from keyreid.errors import DataError, KeyreidError
from keyreid.search.index import (MANIFEST, GalleryIndex, Hit, SearchFilter, SearchIndexError, check_vectors,
                                  exact_neighbours, new_manifest, recall_at_10, register_backend)
from keyreid.utils.io import DiskFullError, atomic_write_text

AUTO_FLAT_MAX = 50_000
UPSERT_BATCH = 512
LOCAL_DIR = "qdrant"
BATCH_KEY = "keyreid_batch"  # payload key: which add a point came with (see the module docstring)


def _models():
    from qdrant_client import models

    return models


def qdrant_filter(filt: Optional[SearchFilter]):
    if filt is None or filt.is_empty():
        return None
    m = _models()
    must, must_not = [], []
    if filt.cameras is not None:
        must.append(m.FieldCondition(key="camid", match=m.MatchAny(any=sorted(int(c) for c in filt.cameras))))
    if filt.cameras_not is not None:
        must_not.append(m.FieldCondition(key="camid",
                                         match=m.MatchAny(any=sorted(int(c) for c in filt.cameras_not))))
    if filt.after is not None or filt.before is not None:
        must.append(m.FieldCondition(key="timestamp", range=m.Range(
            gte=None if filt.after is None else float(filt.after),
            lte=None if filt.before is None else float(filt.before))))
    return m.Filter(must=must or None, must_not=must_not or None)


def _client(folder: Path, url: Optional[str]):
    from qdrant_client import QdrantClient

    if url:
        try:
            client = QdrantClient(url=url, timeout=60)
            client.get_collections()
        except Exception as e:  # connection refused, DNS, TLS: all one line for the user
            raise KeyreidError(f"cannot reach the Qdrant server at {url} ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None
        return client
    try:
        return QdrantClient(path=str(Path(folder) / LOCAL_DIR))
    except RuntimeError as e:  # local storage is locked by another process
        raise DataError(Path(folder) / LOCAL_DIR, str(e).splitlines()[0]) from None


@register_backend("qdrant")
class QdrantIndex(GalleryIndex):
    def __init__(self, folder: Path, manifest: dict, url: Optional[str] = None, client=None):
        self.folder = Path(folder)
        self.manifest = manifest
        self.url = url if url is not None else manifest["params"].get("url")
        self._client = client
        self.build_report: dict = {}
        self._batches: list[str] = []  # tokens of the additions since the last save

    @property
    def client(self):
        if self._client is None:
            self._client = _client(self.folder, self.url)
            if not self._client.collection_exists(self.collection):
                raise DataError(self.folder / MANIFEST, f"Qdrant collection {self.collection!r} not found"
                                                        f"{' at ' + self.url if self.url else ''}")
        return self._client

    @property
    def collection(self) -> str:
        return self.manifest["params"]["collection"]

    # ------------------------------------------------------------------ creation / opening
    @classmethod
    def create(cls, out: Path, *, index_type: str, fingerprint: str, dim: int, normalized: bool, distance: str,
               vectors: Optional[np.ndarray] = None, extra: Optional[dict] = None, qdrant_url: Optional[str] = None,
               collection: Optional[str] = None, ef_search: Optional[int] = None, **unused) -> "QdrantIndex":
        m = _models()
        n = 0 if vectors is None else len(vectors)
        chosen = index_type
        if index_type == "auto":
            chosen = "flat" if n <= AUTO_FLAT_MAX else "hnsw"
        if chosen not in ("flat", "hnsw"):
            raise KeyreidError(f"the qdrant backend offers --type flat, hnsw or auto, not {index_type!r}")
        out = Path(out)
        name = collection or re.sub(r"[^A-Za-z0-9_-]", "_", f"keyreid_{out.resolve().name}_{fingerprint[:8]}")
        params = {"collection": name, "url": qdrant_url or None, "ef_search": ef_search}
        manifest = new_manifest("qdrant", chosen, fingerprint, dim, normalized, distance, params=params,
                                requested_type=index_type, **(extra or {}))
        out.mkdir(parents=True, exist_ok=True)
        client = _client(out, qdrant_url)
        if client.collection_exists(name):
            raise DataError(out, f"Qdrant collection {name!r} already exists{' at ' + qdrant_url if qdrant_url else ''}; "
                                 "not replacing it (pass another -o)")
        client.create_collection(name, vectors_config=m.VectorParams(
            size=int(dim), distance=m.Distance.DOT if normalized else m.Distance.EUCLID))
        if qdrant_url:  # payload indexes make server-side filters fast (local mode has none)
            client.create_payload_index(name, "camid", m.PayloadSchemaType.INTEGER)
            client.create_payload_index(name, "timestamp", m.PayloadSchemaType.FLOAT)
        index = cls(out, manifest, qdrant_url, client)
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
        return index

    @classmethod
    def open(cls, folder: Path, manifest: dict, qdrant_url: Optional[str] = None) -> "QdrantIndex":
        if "params" not in manifest or "collection" not in manifest["params"]:
            raise DataError(Path(folder) / MANIFEST, "qdrant index manifest lacks its collection name")
        if not manifest["params"].get("url") and not qdrant_url and not (Path(folder) / LOCAL_DIR).is_dir():
            raise DataError(Path(folder) / LOCAL_DIR, "the index's local Qdrant storage is missing")
        return cls(folder, manifest, qdrant_url)

    @property
    def approximate(self) -> bool:
        return self.manifest["type"] == "hnsw"

    def calibrate(self, queries: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray) -> dict:
        """Qdrant tunes its own graph: report the recall@10 it reaches on the held-out queries."""
        if not self.approximate or len(queries) == 0:
            return super().calibrate(queries, gallery, gallery_ids)
        truth = exact_neighbours(np.asarray(gallery, np.float32), gallery_ids, np.asarray(queries, np.float32),
                                 self.manifest["normalized"])
        r = recall_at_10(self, np.asarray(queries, np.float32), truth)
        self.manifest["build_recall@10"] = r
        self.build_report = {"type": "hnsw", "recall@10": r, "held_out": len(queries)}
        return self.build_report

    # ------------------------------------------------------------------ the interface
    def _score(self, s: float) -> float:
        return float(s) if self.manifest["normalized"] else -float(s) ** 2

    def search(self, queries: np.ndarray, top_k: int, filt: Optional[SearchFilter] = None) -> list[list[Hit]]:
        m = _models()
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.manifest["dim"]:
            raise SearchIndexError(f"queries have shape {tuple(q.shape)}; the index holds "
                                   f"{self.manifest['dim']}-d vectors")
        if top_k < 1:
            raise KeyreidError("--top-k must be at least 1")
        # local mode is always exact (and warns about search params); a server needs to be told
        params = m.SearchParams(exact=self.manifest["type"] == "flat",
                                hnsw_ef=self.manifest["params"].get("ef_search")) if self.url else None
        flt = qdrant_filter(self.stored_filter(filt))
        requests = [m.QueryRequest(query=row.tolist(), limit=int(top_k), filter=flt, params=params,
                                   with_payload=True) for row in q]
        out = []
        for s in range(0, len(requests), 64):
            for res in self.client.query_batch_points(self.collection, requests[s:s + 64]):
                out.append([Hit(id=int(p.id), score=self._score(p.score), path=p.payload.get("path"),
                                camid=self.shown_camera(p.payload.get("camid")), pid=p.payload.get("pid"),
                                timestamp=p.payload.get("timestamp"), track=p.payload.get("track"))
                            for p in res.points])
        return out

    def add(self, vectors: np.ndarray, metadata: list[dict], fingerprint: str,
            ids: Optional[np.ndarray] = None) -> np.ndarray:
        m = _models()
        v = check_vectors(self.manifest, vectors, fingerprint)
        if len(metadata) != len(v):
            raise SearchIndexError(f"{len(metadata)} metadata rows for {len(v)} vectors")
        ids = self.assign_ids(len(v), ids)
        if len(v) == 0:
            return ids
        metadata = self.stored_metadata(metadata)
        taken = self._existing(ids)
        if taken:
            raise SearchIndexError(f"ids already in the index: {sorted(taken)[:5]}")
        token = uuid.uuid4().hex
        self._batches.append(token)
        # reserve the ids first: a kill from here on is undone by the next writer
        self.manifest["next_id"] = max(int(self.manifest["next_id"]), int(ids.max()) + 1)
        self._write_pending()
        try:
            for s in range(0, len(v), UPSERT_BATCH):
                sl = slice(s, s + UPSERT_BATCH)
                self.client.upsert(self.collection, m.Batch(
                    ids=[int(i) for i in ids[sl]], vectors=v[sl].tolist(),
                    payloads=[{**{k: md.get(k) for k in ("path", "pid", "camid", "timestamp", "track")},
                               BATCH_KEY: token} for md in metadata[sl]]), wait=True)
        except sqlite3.OperationalError as e:  # local mode keeps its points in SQLite
            if "full" not in str(e):
                raise
            raise DiskFullError(f"{self.folder / LOCAL_DIR}: no space left on the device while adding vectors; "
                                "the index keeps what it held before (the points of this add are taken out "
                                "again by the next index add/remove); free some space and run again") from None
        self._after_add(ids)
        return ids

    def _write_pending(self) -> None:
        atomic_write_text(self.folder / MANIFEST, json.dumps(dict(self.manifest, pending={"batches": self._batches}),
                                                             indent=1))

    def recover(self) -> bool:
        """Undo the unsaved changes a killed writer left (see the module docstring); runs under
        the writer lock."""
        pending = self.manifest.get("pending")
        if not pending:
            return False
        m = _models()
        batches = [str(b) for b in pending.get("batches") or []]
        if batches:
            self.client.delete(self.collection, m.FilterSelector(filter=m.Filter(
                must=[m.FieldCondition(key=BATCH_KEY, match=m.MatchAny(any=batches))])), wait=True)
        self.manifest = {k: v for k, v in self.manifest.items() if k != "pending"}
        self.manifest["count"] = self._count()
        self.save()
        return True

    def _existing(self, ids: Iterable[int]) -> set[int]:
        ids = [int(i) for i in ids]
        found: set[int] = set()
        for s in range(0, len(ids), 1000):
            found.update(int(p.id) for p in self.client.retrieve(self.collection, ids[s:s + 1000],
                                                                  with_payload=False, with_vectors=False))
        return found

    def _count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def remove(self, ids: Optional[Iterable[int]] = None, cameras: Optional[Iterable[int]] = None) -> int:
        m = _models()
        before = self._count()
        ids = [int(i) for i in (ids or [])]
        self._write_pending()  # a kill mid-delete: the next writer recounts
        if ids:
            self.client.delete(self.collection, m.PointIdsList(points=ids), wait=True)
        if cameras is not None:
            cams = sorted(self.stored_cameras(cameras))
            self.client.delete(self.collection, m.FilterSelector(filter=m.Filter(
                must=[m.FieldCondition(key="camid", match=m.MatchAny(any=cams))])), wait=True)
        after = self._count()
        self.manifest["count"] = after
        return before - after

    def _retrieve(self, ids: list[int], vectors: bool) -> dict:
        got = {}
        for s in range(0, len(ids), 1000):
            for p in self.client.retrieve(self.collection, ids[s:s + 1000], with_payload=not vectors,
                                          with_vectors=vectors):
                got[int(p.id)] = p
        missing = [i for i in ids if i not in got]
        if missing:
            raise SearchIndexError(f"ids not in the index: {missing[:5]}")
        return got

    def get_vectors(self, ids: Iterable[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        got = self._retrieve(ids, vectors=True)
        return np.array([got[i].vector for i in ids], dtype=np.float32).reshape(len(ids), self.manifest["dim"])

    def get_metadata(self, ids: Iterable[int]) -> list[dict]:
        ids = [int(i) for i in ids]
        got = self._retrieve(ids, vectors=False)
        return [self.shown_metadata({"id": i, **{k: got[i].payload.get(k)
                                                 for k in ("path", "pid", "camid", "timestamp", "track")}})
                for i in ids]

    def cameras(self) -> Optional[list[int]]:
        try:
            found = self.client.facet(self.collection, key="camid", limit=100_000, exact=True)
        except Exception:  # an older server without facets (or local mode without them)
            return None
        return sorted(self.shown_camera(int(h.value)) for h in found.hits)

    def save(self) -> None:
        self.manifest["camera_base"] = self.camera_base   # an index from before the rule: now recorded
        atomic_write_text(self.folder / MANIFEST, json.dumps(self.manifest, indent=1))
        self._batches = []

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


__all__ = ["QdrantIndex", "qdrant_filter"]
