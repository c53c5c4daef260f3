"""Retrieval metrics: hand-computed case, brute force, pytorch-metric-learning and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyreid.evaluation import retrieval
from keyreid.evaluation.reid import EvaluationError
from keyreid.evaluation.retrieval import evaluate, normalized_mutual_info


def _brute_force(x, y, ks, distance):
    """Full distance matrix, self removed, stable sort; lone queries skipped."""
    x = np.asarray(x, np.float64)
    if distance == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = -(x @ x.T)
    else:
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    recall = {k: [] for k in ks}
    aps = []
    for i in range(len(x)):
        others = np.delete(np.arange(len(x)), i)
        order = others[np.argsort(d[i, others], kind="stable")]
        hit = y[order] == y[i]
        r = int(hit.sum())
        if r == 0:
            continue
        for k in ks:
            recall[k].append(hit[:k].any())
        top = hit[:r]
        precision = np.cumsum(top) / np.arange(1, r + 1)
        aps.append(np.sum(precision * top) / r)
    return {k: float(np.mean(v)) for k, v in recall.items()}, float(np.mean(aps))


def _random(seed, n=400, dim=16, n_labels=30):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, n_labels, n)
    y[:3] = [900, 901, 902]  # lone labels: no possible match
    return x, y


# ------------------------------------------------------------------ hand-computed


def test_hand_computed_on_a_line():
    #            a    b    c    d    e     f     g     h
    x = np.array([0, 1, 2.5, 4, 10, 11, 30, 7], np.float32)[:, None]
    y = np.array([0, 1, 0, 1, 2, 2, 3, 2])
    # neighbours (ties by index): a: b c+ ...; b: a c d+; c: b d a+ (b, d tie);
    # d: c b+ (b, h tie); e: f+ h+; f: e+ h+; h: d e+ f+ (d, e tie); g is lone
    r = evaluate(x, y, ks=(1, 2, 4), distance="euclidean", nmi=False)
    assert r.num_queries == 7 and r.num_images == 8
    assert r.recall_at_k == pytest.approx({1: 2 / 7, 2: 5 / 7, 4: 1.0}, abs=1e-12)
    # R = 1 for labels 0, 1 (all first hits past rank 1); R = 2 for label 2: e, f = 1, h = (1/2) / 2
    assert r.map_at_r == pytest.approx((1 + 1 + 0.25) / 7, abs=1e-12)
    assert r.nmi is None


def test_hand_computed_cosine_ignores_scale():
    # angles: 0, 5.7, 90, 84.3, 168.7 degrees; lengths differ on purpose
    x = np.array([[1, 0], [10, 1], [0, 1], [1, 10], [-1, 0.2]], np.float32)
    y = np.array([0, 0, 1, 1, 0])
    r = evaluate(x, y, ks=(1, 2, 4), nmi=False)
    # by angle: 0 -> 1+ 3 2 4+; 1 -> 0+ 3 2 4+; 2 -> 3+ ...; 3 -> 2+ ...; 4 -> 2 3 1+ 0+
    assert r.distance == "cosine"
    assert r.recall_at_k == pytest.approx({1: 4 / 5, 2: 4 / 5, 4: 1.0}, abs=1e-12)
    # MAP@R: label 0 has R = 2 (AP 1/2, 1/2, 0), label 1 has R = 1 (AP 1, 1)
    assert r.map_at_r == pytest.approx(3 / 5, abs=1e-12)


def test_nmi_perfect_and_independent():
    assert normalized_mutual_info([0, 0, 1, 1], [5, 5, 3, 3]) == pytest.approx(1.0)
    assert normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-15)
    # H(U) = ln 2, H(V) = 1.5 ln 2, MI = ln 2 -> 2 ln2 / 2.5 ln2
    assert normalized_mutual_info([0, 0, 1, 1], [0, 1, 2, 2]) == pytest.approx(0.8, abs=1e-12)


# ---------------------------------------------------------------- brute force


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_recall_and_map_at_r_match_brute_force(seed, distance):
    x, y = _random(seed)
    ks = (1, 2, 4, 8, 16)
    r = evaluate(x, y, ks=ks, distance=distance, nmi=False)
    rec, mapr = _brute_force(x, y, ks, distance)
    assert r.recall_at_k == pytest.approx(rec, abs=1e-12)
    assert r.map_at_r == pytest.approx(mapr, abs=1e-12)
    assert r.num_queries == len(x) - 3


@settings(max_examples=50, deadline=None)
@given(data=st.data(), n=st.integers(2, 25), dim=st.integers(1, 3))
def test_property_integer_embeddings_with_ties(data, n, dim):
    x = np.array(data.draw(st.lists(st.integers(-2, 2), min_size=n * dim, max_size=n * dim)),
                 np.float32).reshape(n, dim)
    y = np.array(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
    ks = (1, 2, 4)
    if np.all(np.bincount(y) <= 1):
        with pytest.raises(EvaluationError, match="no valid query"):
            evaluate(x, y, ks=ks, distance="euclidean", nmi=False)
        return
    r = evaluate(x, y, ks=ks, distance="euclidean", nmi=False)
    rec, mapr = _brute_force(x, y, ks, "euclidean")
    assert r.recall_at_k == pytest.approx(rec, abs=1e-12)
    assert r.map_at_r == pytest.approx(mapr, abs=1e-12)


def test_blocks_do_not_change_results(monkeypatch):
    x, y = _random(3, n=300)
    base = evaluate(x, y, nmi=False)
    monkeypatch.setattr(retrieval, "_BLOCK_BYTES", 300 * 4 * 7)  # 7 query rows per block
    small = evaluate(x, y, nmi=False)
    assert small.recall_at_k == base.recall_at_k and small.map_at_r == base.map_at_r


# ------------------------------------------------------------------------ peers


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_matches_pytorch_metric_learning(distance):
    torch = pytest.importorskip("torch")
    acc = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    x, y = _random(4, n=500, dim=24, n_labels=40)
    calc = acc.AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "NMI"),
        device=torch.device("cpu"),
    )
    # PML ranks by L2 on what it is given; unit vectors make that the cosine order.
    given = x / np.linalg.norm(x, axis=1, keepdims=True) if distance == "cosine" else x
    pml = calc.get_accuracy(given, y)
    r = evaluate(x, y, distance=distance)
    assert r.recall_at_k[1] == pytest.approx(pml["precision_at_1"], abs=1e-6)
    assert r.map_at_r == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)
    # same faiss k-means settings -> same clusters -> same NMI
    assert r.nmi == pytest.approx(pml["NMI"], abs=1e-6)


def test_nmi_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(8)
    for _ in range(20):
        a = rng.integers(0, rng.integers(1, 8), 200)
        b = rng.integers(0, rng.integers(1, 8), 200)
        assert normalized_mutual_info(a, b) == pytest.approx(
            metrics.normalized_mutual_info_score(a, b), abs=1e-12
        )
    for a, b in (([0, 0], [1, 1]), ([0, 1], [0, 0]), ([3], [7])):
        assert normalized_mutual_info(a, b) == metrics.normalized_mutual_info_score(a, b)


# ------------------------------------------------------------------------ errors


def test_errors_name_the_problem():
    x, y = _random(5, n=50)
    with pytest.raises(ValueError, match="shape mismatch: 50 embeddings"):
        evaluate(x, y[:-1])
    with pytest.raises(ValueError, match="no valid query"):
        evaluate(x, np.arange(50))
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in 1 of 50 rows"):
        evaluate(bad, y)
    with pytest.raises(ValueError, match="distance must be one of"):
        evaluate(x, y, distance="manhattan")
    zero = x.copy()
    zero[0] = 0
    with pytest.raises(ValueError, match="all zeros"):
        evaluate(zero, y)


def test_no_embeddings_is_a_clear_error_not_a_division_by_zero():
    with pytest.raises(EvaluationError, match=r"no embeddings to evaluate: shape \(0, 8\)"):
        evaluate(np.zeros((0, 8), np.float32), np.zeros(0, np.int64))
    with pytest.raises(EvaluationError, match=r"no embeddings to evaluate: shape \(5, 0\)"):
        evaluate(np.zeros((5, 0), np.float32), np.arange(5))
