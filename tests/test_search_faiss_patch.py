"""pytorch-metric-learning imports faiss.contrib.torch_utils, which swaps faiss's search for a
wrapper without `params` in the whole process: the gallery index must keep working after it."""

import numpy as np


def test_index_searches_after_faiss_torch_utils_is_imported(tmp_path):
    import faiss.contrib.torch_utils  # noqa: F401  (the patch, as pytorch-metric-learning applies it)

    from keyreid.search.faiss_backend import FaissIndex
    from keyreid.search.index import SearchFilter

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    meta = [{"path": f"{i}.jpg", "pid": i, "camid": i % 3, "timestamp": float(i), "track": None}
            for i in range(50)]
    index = FaissIndex.create(tmp_path / "idx", index_type="flat", dim=8, fingerprint="f" * 16, normalized=True,
                              distance="cosine")
    ids = index.add(x, meta, fingerprint="f" * 16)
    hits = index.search(x[:2], 3)
    assert [h[0].id for h in hits] == [int(ids[0]), int(ids[1])]
    filtered = index.search(x[:1], 5, SearchFilter(cameras_not={0}))[0]
    assert filtered and all(h.camid != 0 for h in filtered)
    order = np.argsort(-(x[[i for i in range(50) if i % 3 != 0]] @ x[0]))[:5]
    kept = [i for i in range(50) if i % 3 != 0]
    assert [h.id for h in filtered] == [int(ids[kept[j]]) for j in order]
