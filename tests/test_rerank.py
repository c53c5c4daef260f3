"""Distance matrices against scipy; k-reciprocal re-ranking against torchreid's dense
implementation (the authors' code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keyreid.errors import KeyreidError
from keyreid.evaluation import nearest
from keyreid.evaluation.distance import as_tensor, distance_matrix
from keyreid.evaluation.reid import EvaluationError, evaluate
from keyreid.evaluation.rerank import re_ranking
from peers import peer_module


def _clustered(seed: int, num_query: int = 30, num_gallery: int = 150, ids: int = 20, dim: int = 12,
               spread: float = 0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    qp = rng.integers(0, ids, num_query)
    gp = rng.integers(0, ids, num_gallery)
    q = (centres[qp] + spread * rng.normal(size=(num_query, dim))).astype(np.float32)
    g = (centres[gp] + spread * rng.normal(size=(num_gallery, dim))).astype(np.float32)
    return q, g, qp, gp


def _torchreid(q, g, distance, k1, k2, lam):
    rerank = peer_module("torchreid", "reid", "utils", "rerank.py")
    # torchreid squares the matrices it is given: hand it sqrt of the base distance.
    root = lambda a, b: np.sqrt(np.maximum(distance_matrix(a, b, distance), 0.0))  # noqa: E731
    return rerank.re_ranking(root(q, g), root(q, q), root(g, g), k1=k1, k2=k2, lambda_value=lam)


@pytest.mark.parametrize("metric,scipy_metric", [("cosine", "cosine"), ("euclidean", "sqeuclidean")])
def test_distance_matrix_equals_scipy_cdist_in_any_chunking(metric, scipy_metric):
    from scipy.spatial.distance import cdist

    q, g, _, _ = _clustered(seed=1, num_query=23, num_gallery=41)
    want = cdist(q.astype(np.float64), g.astype(np.float64), scipy_metric)
    for chunk in (5, 4096):
        got = distance_matrix(q, g, metric, chunk=chunk)
        assert got.dtype == np.float32 and got.shape == (23, 41)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown distance"):
        distance_matrix(q, g, "manhattan")


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (6, 1, 0.5), (9, 4, 0.0), (3, 3, 1.0)])
def test_equals_torchreid_dense_reranking(distance, k1, k2, lam):
    q, g, _, _ = _clustered(seed=k1 + 10 * k2)
    ours = re_ranking(q, g, k1=k1, k2=k2, lambda_value=lam, distance=distance)
    ref = _torchreid(q, g, distance, k1, k2, lam)
    assert ours.shape == (len(q), len(g)) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=0)


def test_given_query_gallery_distances_change_nothing_and_chunking_changes_nothing():
    q, g, _, _ = _clustered(seed=3)
    plain = re_ranking(q, g)
    np.testing.assert_allclose(re_ranking(q, g, dist_qg=distance_matrix(q, g), chunk=7), plain, atol=1e-6)


def test_lambda_one_is_the_row_normalised_base_distance():
    q, g, _, _ = _clustered(seed=4)
    full = distance_matrix(np.concatenate([q, g]), np.concatenate([q, g]))
    want = distance_matrix(q, g) / full[: len(q)].max(1, keepdims=True)
    np.testing.assert_allclose(re_ranking(q, g, lambda_value=1.0), want, atol=1e-6)


def test_reranking_raises_map_where_neighbours_share_identity():
    """Identities are elongated clusters: a query's nearest gallery items are often other
    identities, but its k-reciprocal neighbourhood is its own chain. The published gains
    (BoT Market mAP 85.9 -> 94.2) come from this structure."""
    rng = np.random.default_rng(0)
    ids, per_id, dim = 25, 12, 8
    directions = rng.normal(size=(ids, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centres = rng.normal(size=(ids, dim)) * 0.8
    t = rng.uniform(-2, 2, size=(ids, per_id, 1))
    feats = centres[:, None] + t * directions[:, None] + 0.15 * rng.normal(size=(ids, per_id, dim))
    pids = np.repeat(np.arange(ids), per_id)
    feats = feats.reshape(-1, dim).astype(np.float32)
    is_query = np.tile(np.arange(per_id) < 2, ids)
    q, g, qp, gp = feats[is_query], feats[~is_query], pids[is_query], pids[~is_query]
    qc, gc = np.zeros(len(q), int), np.ones(len(g), int)
    before = evaluate(distance_matrix(q, g, "euclidean"), qp, gp, qc, gc).mAP
    after = evaluate(re_ranking(q, g, k1=8, k2=3, distance="euclidean"), qp, gp, qc, gc).mAP
    assert after > before + 0.05, (before, after)


def test_bad_arguments_are_clear_errors():
    q, g, _, _ = _clustered(seed=5, num_query=4, num_gallery=10)
    for kwargs, message in [
        (dict(k1=3, k2=5), r"1 <= k2 <= k1 \+ 1 \(got k1=3, k2=5\)"),
        (dict(k1=20), "k1=20 needs more than 20 images"),
        (dict(k1=3, k2=2, lambda_value=1.5), r"lambda must lie in \[0, 1\]"),
        (dict(k1=3, k2=2, lambda_value=-0.1), r"lambda must lie in \[0, 1\]"),
        (dict(k1=3, k2=2, lambda_value="0.3"), "lambda must be a number"),
        (dict(k1=0, k2=1), "k1 must be >= 1"),
        (dict(k1=2.5, k2=2), "k1 must be a whole number, got 2.5"),
        (dict(k1="3", k2=2), "k1 must be a whole number, got '3'"),
        (dict(k1=True, k2=1), "k1 must be a whole number"),
        (dict(k1=3, k2=1.5), "k2 must be a whole number, got 1.5"),
        (dict(k1=3, k2=2, chunk=0), "chunk must be >= 1"),
    ]:
        with pytest.raises(EvaluationError, match=message):
            re_ranking(q, g, **kwargs)
    with pytest.raises(KeyreidError, match="same dimension"):
        re_ranking(q, g[:, :5], k1=3, k2=2)
    with pytest.raises(KeyreidError, match=r"dist_qg has shape \(4, 9\)"):
        re_ranking(q, g, k1=3, k2=2, dist_qg=np.zeros((4, 9)))
    bad = g.copy()
    bad[7, 0] = np.nan
    with pytest.raises(KeyreidError, match="gallery features.*row 7"):
        re_ranking(q, bad, k1=3, k2=2)


def test_integral_float_k1_k2_are_the_integers():
    """20.0 (YAML, arithmetic) is 20, not a TypeError."""
    q, g, _, _ = _clustered(seed=6)
    np.testing.assert_array_equal(re_ranking(q, g, k1=7.0, k2=np.float64(3.0)), re_ranking(q, g, k1=7, k2=3))
    np.testing.assert_array_equal(re_ranking(q, g, k1=np.int64(7), k2=3), re_ranking(q, g, k1=7, k2=3))


@pytest.mark.parametrize("exact", [True, False])
def test_identical_features_give_finite_distances(exact):
    """A model that collapsed (every feature equal) must not produce NaN. The float32 distances
    of identical vectors are rounding noise around 0 (of either sign) that the peers divide by;
    here every image is at distance 0: lambda 1 gives exactly 0, any lambda a finite [0, 1]."""
    rng = np.random.default_rng(0)
    one = rng.normal(size=(1, 64)).astype(np.float32)
    q, g = np.repeat(one, 5, 0), np.repeat(one, 30, 0)
    assert np.abs(distance_matrix(q, g)).max() > 0  # the noise the old code divided by
    for distance in ("cosine", "euclidean"):
        base_only = re_ranking(q, g, k1=6, k2=3, lambda_value=1.0, distance=distance, exact=exact)
        np.testing.assert_array_equal(base_only, np.zeros((5, 30), np.float32))
        out = re_ranking(q, g, k1=6, k2=3, distance=distance, exact=exact)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    ones = re_ranking(np.ones((5, 4), np.float32), np.ones((30, 4), np.float32), k1=6, k2=3, exact=exact)
    assert np.isfinite(ones).all()


# ------------------------------------------------------------- the bf16 candidate pass


def _tight_clusters(seed: int, ids: int, per_id: int, dim: int = 32, metric: str = "cosine"):
    """Well separated identities whose members lie 0.05-0.1 rad from their centre, at
    distances that differ by ~1e-4 (float32 resolves them, bfloat16, whose dot products are
    good to ~4e-3, does not): bf16 alone would order most neighbour lists wrongly."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    offsets = rng.normal(size=(ids, per_id, dim))
    offsets -= (offsets * centres[:, None]).sum(-1, keepdims=True) * centres[:, None]  # orthogonal
    offsets /= np.linalg.norm(offsets, axis=-1, keepdims=True)
    angle = rng.uniform(0.05, 0.1, size=(ids, per_id, 1))
    feats = np.cos(angle) * centres[:, None] + np.sin(angle) * offsets
    if metric == "euclidean":  # unnormalised, scale varying per identity
        feats = feats * rng.uniform(1, 30, size=(ids, 1, 1))
    pids = np.repeat(np.arange(ids), per_id)
    return feats.reshape(-1, dim).astype(np.float32), pids


def _split(feats, pids, every: int = 4):
    is_query = np.arange(len(feats)) % every == 0
    return feats[is_query], feats[~is_query], pids[is_query], pids[~is_query]


def _lists(q, g, metric, k):
    feats = as_tensor(np.concatenate([q, g]), metric)
    exact, exact_max = nearest.exact_neighbours(feats, k, metric, chunk=37)
    fast, fast_max, stats = nearest.fast_neighbours(feats, len(q), distance_matrix(q, g, metric), k, metric,
                                                    chunk=37)
    bf16 = feats.to(torch.bfloat16)
    dot = (bf16 @ bf16.T).float()  # what the fast pass ranks its candidates by
    sq = (feats * feats).sum(1)
    d = (1 - dot) if metric == "cosine" else sq[:, None] + sq[None] - 2 * dot
    bf16_only = torch.topk(d, k, dim=1, largest=False, sorted=True).indices.numpy()
    return exact, exact_max, fast, fast_max, stats, bf16_only


def _assert_same_up_to_float32_ties(fast, exact, q, g, metric):
    """Equal lists, except that images whose float64 distances differ by less than float32
    resolves (the exact pass's own limit) may swap: row by row the float64 distances along
    both lists agree to 1e-6 of the scale, and such swaps are rare."""
    x = as_tensor(np.concatenate([q, g]), metric).double().numpy()
    differ = np.flatnonzero((fast != exact).any(1))
    assert len(differ) <= 0.01 * len(fast)
    for i in differ:
        dist = lambda idx: (1 - x[idx] @ x[i]) if metric == "cosine" else ((x[idx] - x[i]) ** 2).sum(1)  # noqa: E731
        scale = 1.0 if metric == "cosine" else (x[i] ** 2).sum()
        np.testing.assert_allclose(dist(fast[i]), dist(exact[i]), atol=1e-6 * scale, rtol=0)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_fast_neighbour_lists_equal_the_exact_ones_where_bf16_reorders_near_ties(metric):
    feats, pids = _tight_clusters(seed=0, ids=40, per_id=12, metric=metric)
    q, g, _, _ = _split(feats, pids)
    exact, exact_max, fast, fast_max, stats, bf16_only = _lists(q, g, metric, k=8)
    assert (bf16_only != exact).any(1).mean() > 0.5  # the data do defeat bf16 alone
    _assert_same_up_to_float32_ties(fast, exact, q, g, metric)
    np.testing.assert_allclose(fast_max, exact_max, rtol=1e-6)
    assert stats.rows == len(feats) and stats.fallback_rows == 0  # certified from candidates


def test_rows_the_bound_cannot_certify_fall_back_to_float32_and_stay_exact():
    """One identity of 150: more images within bf16's error of each other than any candidate
    round holds."""
    feats, pids = _tight_clusters(seed=1, ids=12, per_id=12)
    crowd, _ = _tight_clusters(seed=2, ids=1, per_id=150)
    feats = np.concatenate([feats, crowd])
    q, g, _, _ = _split(feats, np.zeros(len(feats), int), every=5)
    exact, exact_max, fast, fast_max, stats, _ = _lists(q, g, "cosine", k=8)
    assert stats.fallback_rows >= 100
    _assert_same_up_to_float32_ties(fast, exact, q, g, "cosine")
    np.testing.assert_allclose(fast_max, exact_max, rtol=1e-6)


def test_bf16_error_bound_holds():
    """The bound the certification rests on, against float64 dot products, at several scales."""
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 1e3):
        x = (rng.normal(size=(300, 512)) * rng.uniform(0.1, 10, size=(300, 1)) * scale).astype(np.float32)
        t = torch.from_numpy(x)
        b = t.to(torch.bfloat16)
        approx = (b @ b.T).double().numpy()
        true = x.astype(np.float64) @ x.astype(np.float64).T
        norm = np.linalg.norm(x.astype(np.float64), axis=1)
        norm_b = np.linalg.norm(b.double().numpy(), axis=1)
        norm_r = np.linalg.norm(x.astype(np.float64) - b.double().numpy(), axis=1)
        gamma = 512 * 2.0 ** -24 / (1 - 512 * 2.0 ** -24)
        bound = (nearest.U_BF16 * np.abs(approx) + gamma * np.outer(norm_b, norm_b)
                 + np.outer(norm_r, norm_b) + np.outer(norm, norm_r))
        assert (np.abs(approx - true) <= bound).all()
        assert np.abs(approx - true).max() > 1e-3 * bound.max()  # and it is not vacuous


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_fast_reranking_equals_the_exact_one_matrix_and_metrics(distance):
    feats, pids = _tight_clusters(seed=3, ids=40, per_id=12, metric=distance)
    q, g, qp, gp = _split(feats, pids)
    qc, gc = np.zeros(len(q), int), np.ones(len(g), int)
    exact = re_ranking(q, g, k1=7, k2=3, distance=distance, exact=True)
    fast = re_ranking(q, g, k1=7, k2=3, distance=distance, exact=False)
    np.testing.assert_allclose(fast, exact, atol=1e-6, rtol=0)
    a, b = evaluate(exact, qp, gp, qc, gc), evaluate(fast, qp, gp, qc, gc)
    assert abs(a.mAP - b.mAP) <= 1e-4 and np.abs(a.cmc - b.cmc).max() <= 1e-4


@pytest.mark.parametrize("exact", [True, False])
def test_one_query_against_a_candidate_set_equals_torchreid(exact):
    """The search command's use: one query, re-ranked over its top candidates."""
    q, g, _, _ = _clustered(seed=8, num_query=1, num_gallery=60)
    ours = re_ranking(q, g, k1=10, k2=4, lambda_value=0.3, exact=exact)
    np.testing.assert_allclose(ours, _torchreid(q, g, "cosine", 10, 4, 0.3), atol=2e-5, rtol=0)
