"""keyreid.adapt: sparse Jaccard distances against a dense transcription of cluster-contrast's
definition and against keyreid's re-ranking, DBSCAN on the sparse matrix against DBSCAN on the
dense one, the degenerate results, and the cluster memory's loss, update and gradient by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from keyreid.adapt import ClusteringError, ClusterMemory, cluster, jaccard_distance
from keyreid.adapt.cluster import dbscan
from keyreid.adapt.jaccard import nearest_neighbours, sparse_jaccard, unit_features
from keyreid.errors import KeyreidError
from keyreid.evaluation.nearest import exact_neighbours, pair_distances
from keyreid.evaluation.rerank import expanded_reciprocal_sets, re_ranking


def _clustered(seed: int, n: int = 150, ids: int = 12, dim: int = 16, spread: float = 0.7):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, ids, n)
    x = rng.normal(size=(ids, dim))[labels] + spread * rng.normal(size=(n, dim))
    return x.astype(np.float32), labels


def _dense_cluster_contrast(x: np.ndarray, k1: int, k2: int) -> tuple[np.ndarray, np.ndarray]:
    """cluster-contrast's compute_jaccard_distance written densely in float64 (distance, overlap)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    d = 2 - 2 * (x @ x.T)
    rank = np.argsort(d, axis=1, kind="stable")[:, :k1]  # its faiss search asks for k1

    def reciprocal(i, k):
        forward = rank[i, :k + 1]
        return forward[[i in rank[j, :k + 1] for j in forward]]

    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = r
        for c in r:
            rc = reciprocal(c, half)
            if len(np.intersect1d(rc, r)) > 2 / 3 * len(rc):
                expanded = np.append(expanded, rc)
        expanded = np.unique(expanded)
        w = np.exp(-d[i, expanded])
        v[i, expanded] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    s = np.minimum(v[:, None, :], v[None, :, :]).sum(2)
    return np.maximum(1 - s / (2 - s), 0), s


def _dense(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(distances with missing pairs at 1, stored mask) — through COO, which keeps explicit zeros."""
    coo = m.tocoo()
    dense, stored = np.ones(m.shape), np.zeros(m.shape, dtype=bool)
    dense[coo.row, coo.col] = coo.data
    stored[coo.row, coo.col] = True
    return dense, stored


@pytest.mark.parametrize("search", ["exact", "faiss"])
@pytest.mark.parametrize("k1,k2", [(30, 6), (20, 1), (9, 4), (1, 1)])
def test_jaccard_equals_dense_cluster_contrast(search, k1, k2):
    x, _ = _clustered(seed=k1 + k2)
    want, overlap = _dense_cluster_contrast(x.astype(np.float64), k1, k2)
    got = jaccard_distance(x, k1=k1, k2=k2, search=search)
    assert isinstance(got, sp.csr_matrix) and got.dtype == np.float32 and got.has_sorted_indices
    dense, stored = _dense(got)
    np.testing.assert_allclose(dense, want, atol=1e-5, rtol=0)
    assert (stored == (overlap > 0)).all()  # exactly the pairs with an overlap are stored
    assert (np.diff(got.indptr) > 0).all() and (got.diagonal() == 0).all() and stored.diagonal().all()


def test_max_distance_keeps_exactly_the_nearer_pairs():
    x, _ = _clustered(seed=5)
    full, pruned = jaccard_distance(x), jaccard_distance(x, max_distance=0.6)
    dense, stored = _dense(full)
    pruned_dense, pruned_stored = _dense(pruned)
    assert (pruned_stored == (stored & (dense <= 0.6))).all()
    np.testing.assert_array_equal(pruned_dense[pruned_stored], dense[pruned_stored])


@pytest.mark.parametrize("k1,k2", [(20, 6), (9, 1)])
def test_sparse_jaccard_equals_reranking_at_lambda_zero(k1, k2):
    """Given V built Zhong's way (k1 + 1 neighbours, exp(-d / row max)), the sparse kernel gives
    re_ranking's Jaccard term: its lambda=0 output on the query x gallery block."""
    x, _ = _clustered(seed=k1)
    q, g = x[:40], x[40:]
    feats = unit_features(x)
    n = len(x)
    nearest, row_max = exact_neighbours(feats, k1 + 1, "cosine", 1024)
    indptr, indices = expanded_reciprocal_sets(nearest, k1, int(np.around(k1 / 2)))
    rows = np.repeat(np.arange(n), np.diff(indptr))
    w = np.exp(-pair_distances(feats.numpy(), rows, indices, True) / row_max[rows])
    w /= np.bincount(rows, w)[rows]
    v = sp.csr_matrix((w, indices, indptr), shape=(n, n))
    if k2 > 1:
        v = sp.csr_matrix((np.full(n * k2, 1 / k2), nearest[:, :k2].ravel(), np.arange(0, n * k2 + 1, k2)),
                          shape=(n, n)) @ v
    ours, _ = _dense(sparse_jaccard(v))
    want = re_ranking(q, g, k1=k1, k2=k2, lambda_value=0.0, exact=True)
    np.testing.assert_allclose(ours[:40, 40:], want, atol=1e-5, rtol=0)


def test_cell_search_finds_the_exact_lists_and_clusters():
    x, truth = _clustered(seed=2, n=3000, ids=100, dim=32, spread=0.5)
    feats = unit_features(x)
    exact = nearest_neighbours(feats, 30, "exact")
    cells = nearest_neighbours(feats, 30, "cells", cell_size=100, probes=8)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(exact, cells)]) / 30 > 0.9
    # every cell probed: the same lists as the exact search
    np.testing.assert_array_equal(nearest_neighbours(feats, 30, "cells", cell_size=100, probes=30), exact)
    a, b = cluster(x, search="exact"), cluster(x, search="cells")
    assert adjusted_rand_score(a.labels, b.labels) > 0.98
    assert adjusted_rand_score(truth, a.labels) > 0.98


def test_dbscan_on_the_sparse_matrix_is_dbscan_on_the_dense_one():
    x, _ = _clustered(seed=3, n=200, ids=15, spread=0.9)
    d = jaccard_distance(x)
    dense, _ = _dense(d)
    for eps, min_samples in ((0.5, 4), (0.6, 4), (0.7, 8)):
        want = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dense)
        np.testing.assert_array_equal(dbscan(d, eps, min_samples), want)
        pruned = jaccard_distance(x, max_distance=eps)
        np.testing.assert_array_equal(dbscan(pruned, eps, min_samples), want)


def test_explicit_zeros_are_neighbours_and_missing_pairs_are_not():
    """Images 0 and 1 identical (distance 0, stored), 2 and 3 at 0.3, nothing else stored."""
    rows, cols = [0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 0, 1, 2, 3, 2, 3]
    data = [0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.0]
    d = sp.csr_matrix((np.array(data, np.float32), (rows, cols)), shape=(4, 4))
    assert d.nnz == 8
    np.testing.assert_array_equal(dbscan(d, 0.5, 2), [0, 0, 1, 1])
    np.testing.assert_array_equal(dbscan(d, 0.2, 2), [0, 0, -1, -1])
    d.eliminate_zeros()  # what arithmetic on the matrix may do: the identical pair is lost
    np.testing.assert_array_equal(dbscan(d, 0.2, 2), [-1, -1, -1, -1])


def test_cluster_recovers_separated_identities_and_counts_cameras():
    x, truth = _clustered(seed=4, n=240, ids=12, dim=32, spread=0.4)
    cameras = np.arange(240) % 3
    result = cluster(x, cameras=cameras)
    assert result.problem is None and result.num_clusters == 12 and result.num_outliers == 0
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert result.sizes.sum() == 240 and result.cross_camera == 12
    assert set(result.seconds) == {"search", "encode", "jaccard", "dbscan"}
    one_camera = cluster(x, cameras=truth)  # each identity seen by its own camera only
    assert one_camera.cross_camera == 0


def _blob(n=60, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)


@pytest.mark.parametrize("features,options,message", [
    (_blob(3), {}, "3 target images are fewer than min_samples=4, the smallest cluster DBSCAN can "
                   "form: add target images or lower --min-samples"),
    (_blob(20), {}, "20 target images are fewer than k1=30 neighbours that the Jaccard distance reads: "
                    "add target images or lower --k1"),
    (_blob(), {"eps": 1e-4}, "DBSCAN (eps=0.0001, min_samples=4) left all 60 target images as outliers: "
                             "raise --eps (or lower --min-samples)"),
    (_blob(), {"eps": 0.95}, "DBSCAN (eps=0.95, min_samples=4) put all 60 clustered target images in one "
                             "cluster (0 outliers): lower --eps"),
])
def test_degenerate_results_say_which_and_what_to_change(features, options, message):
    with pytest.raises(ClusteringError) as e:
        cluster(features, **options)
    assert str(e.value) == message and isinstance(e.value, KeyreidError)
    result = cluster(features, strict=False, **options)
    assert result.problem == message and len(result.labels) == len(features)


@pytest.mark.parametrize("options,match", [
    ({"eps": 1.0}, "strictly between 0 and 1"), ({"eps": 0}, "strictly between 0 and 1"),
    ({"min_samples": 0}, "--min-samples must be a whole number >= 1"),
    ({"k2": 31}, "--k2 must be <= --k1"), ({"k1": 2.5}, "--k1 must be a whole number"),
    ({"method": "infomap"}, "only dbscan is implemented"), ({"search": "hnsw"}, "unknown neighbour search"),
    ({"cameras": [0, 1]}, "one per image"),
])
def test_bad_settings_are_one_line(options, match):
    with pytest.raises(ClusteringError, match=match):
        cluster(_blob(), **options)
    bad = _blob()
    bad[3, 2] = np.nan
    with pytest.raises(KeyreidError, match="NaN or infinite"):
        cluster(bad)


# --- the cluster memory -------------------------------------------------------------------

FEATURES = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, -2.0]])  # normalised: (.6,.8), (1,0), (0,-1)
TARGETS = torch.tensor([0, 0, 1])


def _memory(**options) -> ClusterMemory:
    memory = ClusterMemory(2, 2, temperature=0.5, momentum=0.2, **options)
    memory.centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return memory


def test_loss_by_hand():
    # logits / 0.5: (1.2, 1.6), (2, 0), (0, -2); targets 0, 0, 1
    want = (math.log(math.exp(1.2) + math.exp(1.6)) - 1.2 + math.log(math.exp(2) + 1) - 2
            + math.log(1 + math.exp(-2)) + 2) / 3
    assert _memory().eval()(FEATURES, TARGETS).item() == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx(1.055624, abs=1e-6)


@pytest.mark.parametrize("update,first", [
    ("hard", (0.68, 0.64)),   # 0.2 (1, 0) + 0.8 (.6, .8): (.6, .8) is the least similar of cluster 0
    ("mean", (0.84, 0.32)),   # 0.2 (1, 0) + 0.8 mean((.6, .8), (1, 0))
])
def test_momentum_update_by_hand(update, first):
    memory = _memory(update=update).train()
    memory(FEATURES, TARGETS)
    c0 = torch.tensor(first) / math.hypot(*first)
    # cluster 1: 0.2 (0, 1) + 0.8 (0, -1) = (0, -0.6), normalised (0, -1)
    torch.testing.assert_close(memory.centroids, torch.stack([c0, torch.tensor([0.0, -1.0])]))
    frozen = _memory(update=update).eval()
    frozen(FEATURES, TARGETS)
    torch.testing.assert_close(frozen.centroids, torch.eye(2))  # eval: no update


def test_gradient_reaches_the_features_only_and_uses_the_centroids_before_the_update():
    memory = _memory().double()
    x = FEATURES.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda f: memory.eval()(f, TARGETS), (x,))
    memory.train()
    loss = memory(x, TARGETS)
    loss.backward()  # the update replaced the centroids after the logits: no in-place error
    assert not memory.centroids.requires_grad and memory.centroids.grad is None
    assert not list(memory.parameters()) and "centroids" in memory.state_dict()
    # by hand: d loss / d logits = (softmax - onehot) / (B T), then through the normalisation
    f = x.detach()
    u = f / f.norm(dim=1, keepdim=True)
    p = torch.softmax(u @ torch.eye(2, dtype=torch.float64).T / 0.5, 1)
    g = (p - torch.nn.functional.one_hot(TARGETS, 2)) / (3 * 0.5)  # centroids: identity
    want = (g - (g * u).sum(1, keepdim=True) * u) / f.norm(dim=1, keepdim=True)
    torch.testing.assert_close(x.grad, want)


def test_memory_from_clusters_is_the_normalised_mean_and_refuses_bad_labels():
    feats = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, 1.0], [7.0, 7.0]])
    memory = ClusterMemory.from_clusters(feats, torch.tensor([0, 0, 1, -1]), momentum=0.5)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(memory.centroids, torch.tensor([[s, s], [0.0, 1.0]]))
    assert memory.momentum == 0.5 and memory.update == "hard" and memory.temperature == 0.05
    with pytest.raises(ClusteringError, match="every cluster 0..2"):
        ClusterMemory(2, 3).initialise(feats, torch.tensor([0, 0, 1, -1]))
    with pytest.raises(ClusteringError, match="targets must lie in 0..1"):
        memory(feats[:2], torch.tensor([0, -1]))
    with pytest.raises(ClusteringError, match="unknown memory update"):
        ClusterMemory(2, 3, update="median")
