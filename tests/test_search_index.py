"""GalleryIndex contract, run against every backend: faiss, Qdrant local mode, and a real Qdrant
server when QDRANT_URL is set. Reference: numpy brute force over the same vectors."""

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import faiss
import numpy as np
import pytest

from keyreid.errors import DataError, KeyreidError
from keyreid.search import faiss_backend
from keyreid.search.faiss_backend import FaissIndex
from keyreid.search.index import BACKENDS, SearchFilter, SearchIndexError, add_calibrated, open_index

QDRANT_URL = os.environ.get("QDRANT_URL")
BACKEND_PARAMS = ["faiss", "qdrant", pytest.param("qdrant-server", marks=pytest.mark.skipif(
    not QDRANT_URL, reason="QDRANT_URL not set: no Qdrant server to test against"))]


def clustered(n, d, seed=0, clusters=20, spread=0.5, normalized=True):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d))
    if normalized:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def metadata(n, seed=0):
    rng = np.random.default_rng(seed)
    cams = rng.integers(0, 4, n)
    out = []
    for i in range(n):
        out.append({"path": f"/g/{i:05d}.jpg", "pid": int(i % 17),
                    "camid": None if i % 11 == 0 else int(cams[i]),
                    "timestamp": None if i % 13 == 0 else float(rng.uniform(0, 100)), "track": None})
    return out


@pytest.fixture
def fast_dir():
    # Qdrant's local mode commits every point to SQLite with an fsync (~20 ms each on a disk):
    # tmpfs keeps the contract tests to seconds; the behaviour is the same
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="keyreid-test-", dir=base))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make(fast_dir):
    made = []

    def build(backend, vectors, meta, *, normalized=True, index_type="flat", fingerprint="fp", **opts):
        name = "qdrant" if backend.startswith("qdrant") else backend
        if backend == "qdrant-server":
            opts.update(qdrant_url=QDRANT_URL, collection=f"keyreid_test_{uuid.uuid4().hex[:10]}")
        out = fast_dir / f"{backend}-{len(made)}"
        index = BACKENDS.get(name).create(out, index_type=index_type, fingerprint=fingerprint,
                                          dim=vectors.shape[1], normalized=normalized,
                                          distance="cosine" if normalized else "euclidean", vectors=vectors, **opts)
        add_calibrated(index, vectors, meta, fingerprint)
        index.save()
        made.append(index)
        return index

    yield build
    for index in made:
        if index.manifest["backend"] == "qdrant" and index.manifest["params"].get("url"):
            index.client.delete_collection(index.collection)
        index.close()


def brute_force(vectors, queries, k, normalized=True, keep=None):
    scores = queries @ vectors.T if normalized else -((queries[:, None] - vectors[None]) ** 2).sum(-1)
    if keep is not None:
        scores = np.where(keep[None], scores, -np.inf)
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(int(i), float(row[i])) for i in order if np.isfinite(row[i])])
    return out


def assert_same(hits, expected, tol=1e-5):
    assert len(hits) == len(expected)
    for got, want in zip(hits, expected):
        assert [h.id for h in got] == [i for i, _ in want]
        np.testing.assert_allclose([h.score for h in got], [s for _, s in want], atol=tol, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_search_equals_brute_force(backend, make):
    v, q = clustered(300, 16), clustered(5, 16, seed=1)
    index = make(backend, v, metadata(300))
    assert_same(index.search(q, 10), brute_force(v, q, 10))
    first = index.search(q[:1], 3)[0][0]
    meta = metadata(300)[first.id]
    assert (first.path, first.pid, first.camid, first.timestamp) == (meta["path"], meta["pid"], meta["camid"],
                                                                     meta["timestamp"])


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_euclidean_scores_are_minus_squared_distances(backend, make):
    v, q = clustered(200, 8, normalized=False), clustered(4, 8, seed=2, normalized=False)
    index = make(backend, v, metadata(200), normalized=False)
    assert index.manifest["metric"] == "l2"
    assert_same(index.search(q, 7), brute_force(v, q, 7, normalized=False), tol=1e-3)


FILTERS = [SearchFilter(cameras={1, 2}), SearchFilter(cameras_not={0}), SearchFilter(after=20.0, before=60.0),
           SearchFilter(cameras={3}, after=50.0), SearchFilter(cameras_not={1, 2}, before=30.0),
           SearchFilter(cameras={9})]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_filters_match_numpy_reference(backend, make):
    v, q, meta = clustered(300, 16), clustered(4, 16, seed=3), metadata(300)
    index = make(backend, v, meta)
    for filt in FILTERS:
        keep = np.array([filt.keeps(m) for m in meta])
        got = index.search(q, 12, filt)
        assert_same(got, brute_force(v, q, 12, keep=keep))
        assert all(filt.keeps(meta[h.id]) for row in got for h in row)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_add_remove_get_and_reopen(backend, make):
    v, meta = clustered(120, 16), metadata(120)
    index = make(backend, v[:100], meta[:100])
    new = index.add(v[100:], meta[100:], "fp")
    assert new.tolist() == list(range(100, 120)) and len(index) == 120
    np.testing.assert_allclose(index.get_vectors([3, 110]), v[[3, 110]], atol=1e-6)
    assert [m["path"] for m in index.get_metadata([110, 3])] == [meta[110]["path"], meta[3]["path"]]
    cam2 = {i for i, m in enumerate(meta) if m["camid"] == 2}
    removed = index.remove(ids=[5, 6], cameras=[2])
    assert removed == len(cam2 | {5, 6})
    index.save()
    index.close()
    again = open_index(index.folder, qdrant_url=index.manifest["params"].get("url") if backend != "faiss" else None)
    assert len(again) == 120 - removed
    gone = cam2 | {5, 6}
    keep = np.array([i not in gone for i in range(120)])
    assert_same(again.search(v[:6], 15), brute_force(v, v[:6], 15, keep=keep))
    with pytest.raises(SearchIndexError, match="not in the index"):
        again.get_vectors([5])
    again.close()


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_refuses_other_model_dim_and_unnormalised(backend, make):
    v = clustered(50, 16)
    index = make(backend, v, metadata(50))
    with pytest.raises(SearchIndexError, match="another model"):
        index.add(v[:2], metadata(2), "other-fingerprint")
    with pytest.raises(SearchIndexError, match="16-d"):
        index.add(clustered(2, 8), metadata(2), "fp")
    with pytest.raises(SearchIndexError, match="not L2-normalised"):
        index.add(v[:2] * 3, metadata(2), "fp")
    with pytest.raises(SearchIndexError, match="already in the index"):
        index.add(v[:2], metadata(2), "fp", ids=np.array([0, 999]))
    assert len(index) == 50
    assert_same(index.search(v[:2], 5), brute_force(v, v[:2], 5))


def test_faiss_and_qdrant_agree(make):
    v, q, meta = clustered(400, 32, seed=5), clustered(8, 32, seed=6), metadata(400, seed=5)
    a, b = make("faiss", v, meta), make("qdrant", v, meta)
    for filt in (None, SearchFilter(cameras_not={1}, after=10.0)):
        ha, hb = a.search(q, 20, filt), b.search(q, 20, filt)
        for ra, rb in zip(ha, hb):
            assert [h.id for h in ra] == [h.id for h in rb]
            np.testing.assert_allclose([h.score for h in ra], [h.score for h in rb], atol=1e-5)
            assert [(h.path, h.camid, h.pid, h.timestamp) for h in ra] == [(h.path, h.camid, h.pid, h.timestamp)
                                                                          for h in rb]


@pytest.mark.parametrize("index_type", ["ivf", "hnsw", "pq"])
def test_approximate_recall_against_exact(index_type, make):
    v = clustered(6000, 32, seed=7, clusters=60, spread=0.8)
    q = clustered(200, 32, seed=8, clusters=60, spread=0.8)  # same centres (seed of the centres differs:
    q = v[np.random.default_rng(9).choice(len(v), 200, replace=False)] + 0.05 * q  # queries near gallery
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    index = make("faiss", v, metadata(6000), index_type=index_type)
    assert index.manifest["type"] == index_type
    assert index.build_report["recall@10"] >= 0.95
    exact = brute_force(v, q, 10)
    got = index.search(q, 10)
    recall = np.mean([len({h.id for h in g} & {i for i, _ in e}) / 10 for g, e in zip(got, exact)])
    assert recall >= 0.95
    # the tuned search parameter survives a reopen
    again = open_index(index.folder)
    assert [h.id for h in again.search(q[:20], 10)[5]] == [h.id for h in got[5]]


@pytest.mark.parametrize("index_type,opts", [("ivf", {"nlist": 8, "nprobe": 8}), ("hnsw", {"ef_search": 400})])
def test_filters_on_approximate_types(index_type, opts, make):
    """Filters reach inside IVF and HNSW (through the id map): with every list probed / a wide
    beam, a filtered search equals the filtered brute force."""
    v, q, meta = clustered(400, 16, seed=14), clustered(4, 16, seed=15), metadata(400, seed=14)
    index = make("faiss", v, meta, index_type=index_type, **opts)
    for filt in FILTERS:
        keep = np.array([filt.keeps(m) for m in meta])
        assert_same(index.search(q, 10, filt), brute_force(v, q, 10, keep=keep))


def test_hnsw_remove_rebuilds_without_the_removed(make):
    v = clustered(500, 16, seed=10)
    index = make("faiss", v, metadata(500), index_type="hnsw", ef_search=200)
    assert index.remove(ids=list(range(0, 500, 2))) == 250
    hits = index.search(v[:10], 10)
    assert all(h.id % 2 == 1 for row in hits for h in row)
    np.testing.assert_allclose(index.get_vectors([1, 3]), v[[1, 3]], atol=1e-6)


def test_auto_picks_exact_for_small_and_pq_for_large(make, monkeypatch):
    """Above AUTO_FLAT_MAX auto builds the pq index (4-bit PQ fast-scan, exact re-scoring of
    k_factor x k candidates) and tunes k_factor; its recall on fresh queries against numpy brute
    force clears the target, and the scores of the neighbours it finds are the exact cosines."""
    v = clustered(3000, 32, seed=11, clusters=150, spread=1.0)
    assert make("faiss", v, metadata(3000), index_type="auto").manifest["type"] == "flat"
    monkeypatch.setattr(faiss_backend, "AUTO_FLAT_MAX", 1000)
    big = make("faiss", v, metadata(3000), index_type="auto")
    m = big.manifest
    assert m["type"] == "pq" and m["requested_type"] == "auto" and len(big) == 3000
    assert m["params"]["pq_m"] == faiss_backend.default_pq_m(32) == 4
    assert big.build_report["recall@10"] >= 0.95 and m["build_recall@10"] == big.build_report["recall@10"]
    assert m["params"]["k_factor"] in faiss_backend.K_FACTOR_STEPS
    q = clustered(200, 32, seed=11, clusters=150, spread=1.0)[np.random.default_rng(3).permutation(200)]
    q = v[np.random.default_rng(4).choice(3000, 200, replace=False)] + 0.3 * q
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact, got = brute_force(v, q, 10), big.search(q, 10)
    recall = np.mean([len({h.id for h in g} & {i for i, _ in e}) / 10 for g, e in zip(got, exact)])
    assert recall >= 0.95
    for qi, row in enumerate(got):
        np.testing.assert_allclose([h.score for h in row], v[[h.id for h in row]] @ q[qi], atol=1e-5)
    np.testing.assert_array_equal(big.get_vectors([0, 2999]), v[[0, 2999]])
    # the tuned k_factor is what a reopened index searches with
    again = open_index(big.folder)
    assert [h.id for h in again.search(q[:5], 10)[3]] == [h.id for h in got[3]]


def test_hnsw_builds_in_chunks_with_the_measured_setting(make, monkeypatch):
    """--type hnsw: M 32, efConstruction 40, efSearch tuned; the graph is added in chunks
    (shrunk here so the chunked path runs at test size)."""
    monkeypatch.setattr(faiss_backend, "HNSW_ADD_CHUNK", 700)
    v = clustered(3000, 32, seed=11, clusters=150, spread=1.0)
    index = make("faiss", v, metadata(3000), index_type="hnsw")
    m = index.manifest
    assert (m["params"]["M"], m["params"]["ef_construction"]) == (32, 40) and len(index) == 3000
    assert m["params"]["ef_search"] in faiss_backend.EF_STEPS and index.build_report["recall@10"] >= 0.95


@pytest.mark.parametrize("exact_subset_max", [10**9, 0])
def test_filters_on_pq_equal_the_filtered_brute_force(exact_subset_max, make, monkeypatch):
    """PQ fast-scan ignores faiss ID selectors (a selector handed to it is silently dropped), so
    keyreid filters itself: exact over few kept vectors, or an oversampled search cut to the kept
    ids. With a k_factor that re-scores everything both paths equal the filtered brute force."""
    monkeypatch.setattr(faiss_backend, "EXACT_SUBSET_MAX", exact_subset_max)
    v, q, meta = clustered(1200, 16, seed=14), clustered(4, 16, seed=15), metadata(1200, seed=14)
    index = make("faiss", v, meta, index_type="pq", k_factor=64)
    for filt in FILTERS:
        keep = np.array([filt.keeps(m) for m in meta])
        assert_same(index.search(q, 10, filt), brute_force(v, q, 10, keep=keep))


def test_pq_remove_keeps_the_codebook_and_the_rest(make):
    v = clustered(1500, 16, seed=10)
    index = make("faiss", v, metadata(1500), index_type="pq", k_factor=64)
    base = faiss.downcast_index(faiss.downcast_index(index.index.index).base_index)
    codebook = faiss.vector_to_array(base.pq.centroids).copy()
    assert index.remove(ids=list(range(0, 1500, 2))) == 750
    hits = index.search(v[:10], 10)
    assert all(h.id % 2 == 1 for row in hits for h in row) and len(index) == 750
    np.testing.assert_allclose(index.get_vectors([1, 3]), v[[1, 3]], atol=1e-6)
    base = faiss.downcast_index(faiss.downcast_index(index.index.index).base_index)
    np.testing.assert_array_equal(faiss.vector_to_array(base.pq.centroids), codebook)
    index.save()
    assert [h.id for h in open_index(index.folder).search(v[1:2], 3)[0]][0] == 1


def test_pq_refuses_small_galleries_and_bad_sub_quantisers(fast_dir):
    with pytest.raises(SearchIndexError, match="needs at least 1000 vectors .* use --type flat"):
        FaissIndex.create(fast_dir / "a", index_type="pq", fingerprint="fp", dim=16, normalized=True,
                          distance="cosine", vectors=clustered(300, 16))
    with pytest.raises(KeyreidError, match="--pq-m 3: must be even and divide the dimension 16"):
        FaissIndex.create(fast_dir / "b", index_type="pq", fingerprint="fp", dim=16, normalized=True,
                          distance="cosine", vectors=clustered(1200, 16), pq_m=3)


def test_ivf_storage_is_refused_where_auto_does_not_build_ivf(fast_dir):
    v = clustered(300, 16)
    with pytest.raises(KeyreidError, match="--ivf-storage is for IVF indexes; this index is flat"):
        FaissIndex.create(fast_dir / "i", index_type="auto", fingerprint="fp", dim=16, normalized=True,
                          distance="cosine", vectors=v, storage="fp16")


def test_crash_between_files_keeps_the_old_index(make, monkeypatch):
    v, q = clustered(200, 16, seed=12), clustered(5, 16, seed=13)
    index = make("faiss", v[:150], metadata(150))
    before = index.search(q, 10)
    folder = index.folder
    index = open_index(folder)
    index.add(v[150:], metadata(200)[150:], "fp")
    real_replace, calls = os.replace, {"n": 0}

    def crash_on_second(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated crash between files")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(OSError, match="simulated crash"):
        index.save()
    monkeypatch.setattr(os, "replace", real_replace)
    old = open_index(folder)
    assert len(old) == 150
    assert [[(h.id, h.score) for h in row] for row in old.search(q, 10)] == \
        [[(h.id, h.score) for h in row] for row in before]
    assert not list(folder.glob("*.tmp"))
    # the next good save moves to the new generation and removes the orphan of the crashed one
    index.save()
    again = open_index(folder)
    assert len(again) == 200 and len(list(folder.glob("vectors-*.faiss"))) == 1
    assert_same(again.search(q, 10), brute_force(v, q, 10))


def test_open_is_lazy(make, monkeypatch):
    index = make("faiss", clustered(50, 8), metadata(50))
    calls = {"n": 0}
    real = faiss.read_index

    def counting(path, *args):
        calls["n"] += 1
        return real(path, *args)

    monkeypatch.setattr(faiss, "read_index", counting)
    opened = open_index(index.folder)
    assert len(opened) == 50 and opened.info()["dim"] == 8 and calls["n"] == 0
    opened.search(clustered(1, 8), 3)
    assert calls["n"] == 1


def test_damaged_index_is_one_clear_error(make):
    index = make("faiss", clustered(30, 8), metadata(30))
    folder = index.folder
    (folder / index.manifest["files"]["metadata"]).unlink()
    with pytest.raises(DataError, match="missing"):
        open_index(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        open_index(folder)
    manifest = json.loads(json.dumps(index.manifest))
    manifest["format"] = "something-else"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="not a keyreid index"):
        open_index(folder)


def test_ids_are_64_bit(make):
    v = clustered(3, 8)
    index = make("faiss", v[:1], metadata(1))
    big = np.array([2 ** 40 + 7, 2 ** 62], dtype=np.int64)
    index.add(v[1:], metadata(2), "fp", ids=big)
    assert [h.id for h in index.search(v[1:], 1)[0]] == [2 ** 40 + 7]
    assert index.manifest["next_id"] == 2 ** 62 + 1
