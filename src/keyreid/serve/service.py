"""The model and the gallery index behind the HTTP routes: embed a batch of query images (and,
for keypoint heads, predict their keypoints), search, re-rank, add and remove gallery images,
and make thumbnails. Everything here runs in worker threads, never on the event loop.

Batch invariance: on CPU a batch of one runs other kernels than a batch of two or more, so the
same image would get an embedding a few 1e-7 off depending on whether it was batched with other
queries. A single query is therefore padded to a batch of two, which makes every answer
identical whatever the load (tests/test_serve_api.py checks it under 16 concurrent clients).

The index is used from one thread only: backends may hold objects bound to the thread that
opened them (the faiss backend's SQLite metadata does), and one owner thread also serialises
searches with additions and removals.

Other processes may change the index while it is served (`keyreid index add/remove`): every
gallery change here takes the index's writer lock (keyreid.search.index.index_lock), reopens
the index when its manifest on disk is no longer the one served, and only then adds or removes,
so ids are never reused and no one's additions are saved over."""

from __future__ import annotations

import io
import json
import os
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from keyreid.errors import KeyreidError
from keyreid.search.index import (GalleryIndex, Hit, SearchFilter, SearchIndexError, index_lock, open_index,
                                  read_index_manifest)
from keyreid.utils.io import LockedError, atomic_write

THUMBNAIL_HEIGHT = 160
THUMBNAIL_CACHE = 4096
WRITE_WAIT_S = 10.0  # an HTTP client waits this long for another writer, then gets 503


@dataclass
class SearchOptions:
    top_k: int = 10
    cameras: Optional[set[int]] = None
    exclude_cameras: Optional[set[int]] = None
    after: Optional[float] = None
    before: Optional[float] = None
    rerank: bool = False

    def filter(self) -> Optional[SearchFilter]:
        f = SearchFilter(cameras=self.cameras, cameras_not=self.exclude_cameras, after=self.after,
                         before=self.before)
        return None if f.is_empty() else f


@dataclass
class Query:
    image: Image.Image
    options: Optional[SearchOptions]   # None: embed only (adding to the gallery)


@dataclass
class Explain:
    """A similarity Grad-CAM of a query and one gallery image (runs alone, not batched)."""
    image: Image.Image
    gallery_id: int


@dataclass
class QueryResult:
    embedding: np.ndarray
    hits: list = field(default_factory=list)        # (Hit, re-ranked distance or None)
    keypoints: Optional[np.ndarray] = None          # [K, 3] x, y, peak in the query's own pixels


class NotFound(KeyreidError):
    """No gallery image has that id."""


class Unavailable(KeyreidError):
    """The served model cannot do this (an ONNX export has no gradients)."""


class SearchService:
    def __init__(self, model, index: GalleryIndex, uploads_dir: Path, flip: Optional[bool] = None,
                 max_top_k: int = 100, rerank_candidates: int = 100, write_wait_s: float = WRITE_WAIT_S):
        manifest = index.manifest
        if model.fingerprint != manifest["fingerprint"]:
            raise KeyreidError(f"the index was built with model {manifest['fingerprint']} but the checkpoint is "
                               f"{model.fingerprint}; serve the index with the checkpoint it was built from")
        if model.dim != manifest["dim"]:
            raise KeyreidError(f"the model embeds {model.dim}-d vectors, the index holds {manifest['dim']}-d")
        self.model = model
        self.index = index
        self.uploads_dir = Path(uploads_dir)
        self.flip = bool(manifest.get("flip", False)) if flip is None else flip
        self.max_top_k = max_top_k
        self.rerank_candidates = rerank_candidates
        self.write_wait_s = write_wait_s
        self._index_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyreid-index")
        self.skeleton = getattr(model, "skeleton", None)
        # only a torch model exposes its full output; an ONNX model gives embeddings only
        self.has_keypoints = self.skeleton is not None and hasattr(model, "forward") and \
            model.card.get("model", {}).get("head") in ("kae", "aacn", "pabr")
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        self._thumb_lock = threading.Lock()
        self._explain_net = None
        self._explain_lock = threading.Lock()
        self._manifest_key = self._manifest_stat()

    def on_index(self, fn, *args):
        """Run fn(*args) in the index's owner thread and return its result."""
        if threading.current_thread().name.startswith("keyreid-index"):
            return fn(*args)
        return self._index_thread.submit(fn, *args).result()

    def close(self) -> None:
        self._index_thread.submit(self.index.close).result()
        self._index_thread.shutdown()

    def _writing(self, fn):
        """fn() in the index thread, under the writer lock, on the index as it is on disk now."""
        folder = getattr(self.index, "folder", None)
        if folder is None:  # an index without a folder has no other writers
            return self.on_index(fn)

        def locked():
            with index_lock(folder, self.write_wait_s):
                self._reload_if_changed(folder)
                return fn()

        return self.on_index(locked)

    def _manifest_stat(self) -> Optional[tuple]:
        folder = getattr(self.index, "folder", None)
        try:
            st = (Path(folder) / "manifest.json").stat() if folder is not None else None
        except OSError:
            return None
        return None if st is None else (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        """Before a search (in the index thread): when the manifest file changed since we last
        looked (a CLI `index add/remove` finished), reopen the index so searches see its images.
        A stat per search; a writer still at work is not waited for (we serve the copy we have,
        which stays consistent, and look again at the next search)."""
        key = self._manifest_stat()
        if key is None or key == self._manifest_key:
            return
        folder = Path(self.index.folder)
        try:
            with index_lock(folder, 0):
                self._reload_if_changed(folder)
        except LockedError:
            return
        self._manifest_key = self._manifest_stat()

    def _reload_if_changed(self, folder: Path) -> None:
        """Reopen the index when another process saved it since we opened it (or left a change
        to undo): writing from the stale copy would reuse its ids and drop its additions."""
        on_disk = read_index_manifest(folder)
        if on_disk == json.loads(json.dumps(self.index.manifest)) and not on_disk.get("pending"):
            return
        if on_disk["fingerprint"] != self.model.fingerprint or on_disk["dim"] != self.model.dim:
            raise KeyreidError(f"{folder}: the index on disk now holds model {on_disk['fingerprint']}, the service "
                               f"serves {self.model.fingerprint}; restart the service with the right checkpoint")
        url = getattr(self.index, "url", None) if on_disk["backend"] == "qdrant" else None
        self.index.close()  # Qdrant's local mode admits one client per folder
        self.index = open_index(folder, url, locked=True)
        with self._thumb_lock:
            self._thumbs.clear()  # ids removed elsewhere must not keep their thumbnails
        self._manifest_key = self._manifest_stat()

    # ------------------------------------------------------------------ embedding
    def embed_batch(self, images: list[Image.Image]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """float32 [N, D] embeddings (as the index expects them) and [N, K, 3] keypoints or None."""
        batch = self.model.preprocess(images)
        n = len(batch)
        if n == 1:  # see the module docstring: batches of one take other kernels
            batch = torch.cat([batch, batch])
        if not self.has_keypoints:
            return self.model.embed_tensor(batch, flip=self.flip)[:n], None
        out = self.model.forward(batch)
        emb = out_embedding(self.model, out, batch, self.flip)[:n]
        keypoints = None
        if out.heatmaps is not None:
            from keyreid.viz.heatmaps import heatmap_peaks_xy

            maps = out.heatmaps[:n].float().cpu().numpy()
            # the model sees the image resized to its input size: map to each query's own pixels
            keypoints = np.stack([heatmap_peaks_xy(m, (im.height, im.width)) for m, im in zip(maps, images)])
        return emb, keypoints

    def run_batch(self, jobs: list) -> list:
        """The pool's job: one model call for all the queries of the batch, then one search per
        query (one search at a time keeps every answer independent of what else was in the
        batch); explanations one by one."""
        results: list = [None] * len(jobs)
        queries = [i for i, j in enumerate(jobs) if isinstance(j, Query)]
        if queries:
            emb, keypoints = self.embed_batch([jobs[i].image for i in queries])
            for row, i in enumerate(queries):
                q = jobs[i]
                try:
                    hits = self.search_vector(emb[row], q.options) if q.options is not None else []
                    results[i] = QueryResult(emb[row], hits, None if keypoints is None else keypoints[row])
                except Exception as e:  # noqa: BLE001 - one bad query does not fail the batch
                    results[i] = e
        for i, job in enumerate(jobs):
            if isinstance(job, Explain):
                try:
                    results[i] = self.explain(job.image, job.gallery_id)
                except Exception as e:  # noqa: BLE001
                    results[i] = e
        return results

    def explain(self, image: Image.Image, gallery_id: int) -> tuple[bytes, float]:
        """PNG of keyreid.viz.gradcam's similarity maps for the query and a gallery image, and
        their cosine similarity. Runs on a private copy of the network: the Grad-CAM hook must
        not see the forward passes of searches running in other workers."""
        import copy
        import tempfile

        from keyreid.viz.gradcam import render_explanation, similarity_cam
        from keyreid.viz.heatmaps import denormalize_images

        if not hasattr(self.model, "model"):
            raise Unavailable("explanations need gradients: serve the torch checkpoint (.pt), not an ONNX export")
        match = self.gallery_image(gallery_id)
        with self._explain_lock:
            if self._explain_net is None:
                self._explain_net = copy.deepcopy(self.model.model)
            batch = self.model.preprocess([image, match])
            cam = similarity_cam(self._explain_net, batch[0], batch[1])
        inp = self.model.card["input"]
        with tempfile.TemporaryDirectory() as tmp:
            out = render_explanation(denormalize_images(batch, inp["mean"], inp["std"]), cam,
                                     Path(tmp) / "explain.png")
            return out.read_bytes(), cam.similarity

    # ------------------------------------------------------------------ search
    def search_vector(self, vector: np.ndarray, opts: SearchOptions) -> list[tuple[Hit, Optional[float]]]:
        filt = opts.filter()
        self.on_index(self._refresh)
        if not opts.rerank:
            return [(h, None) for h in self.on_index(self.index.search, vector[None], opts.top_k, filt)[0]]

        def candidates():
            hits = self.index.search(vector[None], max(self.rerank_candidates, opts.top_k), filt)[0]
            return hits, (self.index.get_vectors([h.id for h in hits]) if len(hits) >= 2 else None)

        hits, gallery = self.on_index(candidates)
        if gallery is None:
            return [(h, None) for h in hits[:opts.top_k]]
        from keyreid.evaluation.rerank import re_ranking

        # k-reciprocal re-ranking among the query and its n nearest candidates
        k1 = min(20, len(hits))
        dist = re_ranking(vector[None], gallery, k1=k1, k2=min(6, k1), distance=self.model.distance)[0]
        order = np.argsort(dist, kind="stable")[:opts.top_k]
        return [(hits[j], float(dist[j])) for j in order]

    # ------------------------------------------------------------------ gallery
    def metadata(self, gallery_id: int) -> dict:
        try:
            return self.on_index(self.index.get_metadata, [gallery_id])[0]
        except (SearchIndexError, KeyError):
            raise NotFound(f"no gallery image has id {gallery_id}") from None

    def gallery_image(self, gallery_id: int) -> Image.Image:
        """The gallery image the index names for this id (the path comes from the index, never
        from a client)."""
        from keyreid.data.loader import read_image

        path = self.metadata(gallery_id).get("path")
        if not path:
            raise NotFound(f"gallery image {gallery_id} has no stored path")
        try:
            return read_image(path)
        except KeyreidError:
            raise NotFound(f"gallery image {gallery_id} is no longer readable on the server") from None

    def thumbnail(self, gallery_id: int) -> bytes:
        with self._thumb_lock:
            if gallery_id in self._thumbs:
                self._thumbs.move_to_end(gallery_id)
                return self._thumbs[gallery_id]
        im = self.gallery_image(gallery_id)
        scale = THUMBNAIL_HEIGHT / im.height
        if scale < 1:
            im = im.resize((max(1, round(im.width * scale)), THUMBNAIL_HEIGHT), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=88)
        data = buf.getvalue()
        with self._thumb_lock:
            self._thumbs[gallery_id] = data
            if len(self._thumbs) > THUMBNAIL_CACHE:
                self._thumbs.popitem(last=False)
        return data

    def sample_gallery(self, limit: int) -> list[dict]:
        """Up to `limit` gallery images spread over the id range (the interface has no id
        listing; ids are probed a few at a time)."""
        return self.on_index(self._sample_gallery, limit)

    def _sample_gallery(self, limit: int) -> list[dict]:
        next_id = int(self.index.manifest.get("next_id", len(self.index)))
        step = max(1, next_id // max(limit, 1))
        out: list[dict] = []
        for start in range(0, next_id, step):
            for i in range(start, min(start + step, next_id)):
                try:
                    meta = self.index.get_metadata([i])[0]
                except (SearchIndexError, KeyError):
                    continue
                out.append({"id": i, **{k: meta.get(k) for k in ("camid", "pid", "timestamp")}})
                break
            if len(out) >= limit:
                break
        return out

    def add(self, embedding: np.ndarray, image: Image.Image, meta: dict) -> int:
        """Store a copy of the uploaded image (PNG, a name the server chooses) and add it to the
        index, saved atomically. A failure leaves neither the copy nor the entry behind."""
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        path = (self.uploads_dir / f"{uuid.uuid4().hex}.png").resolve()
        atomic_write(path, lambda tmp: image.save(tmp, "PNG"))
        def add_and_save():
            ids = self.index.add(embedding[None], [dict(meta, path=str(path))], self.model.fingerprint)
            self.index.save()
            return ids

        try:
            ids = self._writing(add_and_save)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return int(ids[0])

    def remove(self, gallery_id: int) -> dict:
        """Take an image out of the index (saved atomically). Only the service's own upload
        copies are deleted from disk; images of the user's gallery stay where they are."""
        def remove_and_save():
            meta = self.metadata(gallery_id)
            self.index.remove([gallery_id])
            self.index.save()
            return meta

        meta = self._writing(remove_and_save)
        with self._thumb_lock:
            self._thumbs.pop(gallery_id, None)
        path = Path(meta.get("path") or "")
        deleted = False
        if path.parent.resolve() == self.uploads_dir.resolve() and path.is_file():
            os.unlink(path)
            deleted = True
        return {"id": gallery_id, "deleted_file": deleted}

    def info(self) -> dict:
        card = self.model.card
        info, size = self.on_index(lambda: (self.index.info(), len(self.index)))
        return {
            "model": {"fingerprint": self.model.fingerprint, "dim": self.model.dim, "distance": self.model.distance,
                      "backbone": card.get("model", {}).get("backbone"), "head": card.get("model", {}).get("head"),
                      "input": {"height": self.model.input_size[0], "width": self.model.input_size[1]},
                      "keypoints": self.has_keypoints, "skeleton": self.skeleton_json(), "flip": self.flip},
            "index": {"size": size, "backend": info.get("backend"), "type": info.get("type"),
                      "metric": info.get("metric")},
        }

    def skeleton_json(self) -> Optional[dict]:
        if not self.has_keypoints:
            return None
        from keyreid.viz.skeleton import CENTRE, LEFT, RIGHT, side_colour

        def css(rgb) -> str:
            return "#%02x%02x%02x" % tuple(rgb)

        # the CLI's colours (keyreid.viz.skeleton): left warm, right cool, centre green
        return {"name": self.skeleton.name, "keypoints": list(self.skeleton.keypoints),
                "limbs": [list(l) for l in self.skeleton.limbs],
                "colours": [css(side_colour(n)) for n in self.skeleton.keypoints],
                "side_colours": {"left": css(LEFT), "right": css(RIGHT)}, "centre_colour": css(CENTRE)}


def out_embedding(model, out, batch: torch.Tensor, flip: bool) -> np.ndarray:
    """LoadedModel.embed_tensor's embedding from a forward output already computed (so keypoint
    heads run once per query); tests check it equals embed_tensor bit for bit."""
    f = out.embedding
    if flip:
        f = (f + model.forward(torch.flip(batch, dims=[3])).embedding) / 2
    if model.normalized:
        f = torch.nn.functional.normalize(f, dim=1)
    return f.float().cpu().numpy()


__all__ = ["Explain", "NotFound", "Unavailable", "Query", "QueryResult", "SearchOptions", "SearchService", "out_embedding"]
