"""Re-id ranking evaluation: hand-computed cases, the NumPy reference, torchreid and fast-reid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyreid.evaluation import reid
from keyreid.evaluation.reid import EvaluationError, evaluate, evaluate_reference
from peers import compile_fastreid_rank_cy, load_by_path, peer_module, site_file

# --------------------------------------------------------------------------- helpers


class _StableNumpy:
    """numpy with a stable argsort, patched into peers that call np.argsort (quicksort)."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def argsort(a, axis=-1, **_):
        return np.argsort(a, axis=axis, kind="stable")


@pytest.fixture(scope="module")
def torchreid_rank():
    mod = peer_module("torchreid", "reid", "metrics", "rank.py")
    mod.np = _StableNumpy()
    return mod


@pytest.fixture(scope="module")
def fastreid_rank():
    mod = peer_module("fastreid", "evaluation", "rank.py")
    mod.np = _StableNumpy()
    return mod


@pytest.fixture(scope="module")
def fastreid_cy(request, tmp_path_factory):
    """fast-reid's Cython evaluator, compiled once into pytest's cache directory."""
    if site_file("fastreid", "evaluation", "rank_cylib", "rank_cy.pyx") is None:
        pytest.skip("fastreid is not installed")
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    build = Path(cache.mkdir("fastreid_rank_cy") if cache else tmp_path_factory.mktemp("rank_cy"))
    try:
        so = compile_fastreid_rank_cy(build)
    except RuntimeError as e:
        pytest.skip(f"could not compile rank_cy.pyx: {str(e)[-500:]}")
    mod = load_by_path("rank_cy", so)
    mod.np = _StableNumpy()  # module globals are looked up at call time, so this takes
    return mod


def _random_case(seed, nq=40, ng=300, n_ids=25, n_cams=4, levels=12):
    """Distances on a coarse grid (many ties), ids and cameras drawn at random."""
    rng = np.random.default_rng(seed)
    d = rng.integers(0, levels, (nq, ng)).astype(np.float32) / levels
    q_pids = rng.integers(0, n_ids, nq)
    g_pids = rng.integers(0, n_ids, ng)
    q_cams = rng.integers(0, n_cams, nq)
    g_cams = rng.integers(0, n_cams, ng)
    return d, q_pids, g_pids, q_cams, g_cams


def _fast(d, qp, gp, qc, gc, max_rank=50, dense_max=reid._DENSE_MAX_POSITIVES, ap_mode="standard",
          junk_pids=None):
    """evaluate() with a chosen kernel path (fused counting passes or one pass with binary search)."""
    d, (qp, gp, qc, gc), max_rank = reid._check_inputs(d, qp, gp, qc, gc, max_rank, ap_mode)
    codes = reid._encode(qp, gp, qc, gc, junk_pids)
    fr, ap, inp, _, nan_row = reid._per_query(d, *codes, trapezoid=ap_mode == "trapezoid",
                                              dense_max=dense_max)
    assert not nan_row.any()
    return reid._aggregate(fr, ap, inp, fr > 0, max_rank, d.shape[0], ap_mode)


def _assert_same(a, b, tol=1e-12):
    assert a.num_valid_queries == b.num_valid_queries
    np.testing.assert_allclose(a.cmc, b.cmc, rtol=0, atol=tol)
    assert a.mAP == pytest.approx(b.mAP, abs=tol)
    assert a.mINP == pytest.approx(b.mINP, abs=tol)


# ------------------------------------------------------------------ hand-computed


G_PIDS = np.array([1, 2, 1, 3, 1, 2, 1, 4])
G_CAMS = np.array([0, 1, 1, 0, 2, 0, 1, 1])
Q_PIDS = np.array([1, 2, 4, 9])
Q_CAMS = np.array([0, 1, 1, 0])
DIST = np.array(
    [
        # stable order: 5 0x 1 2+ 3 6+ 4+ 7 -> positives at ranks 3, 5, 6 (item 0 is same cam)
        [0.1, 0.2, 0.3, 0.3, 0.5, 0.05, 0.3, 0.9],
        # item 1 same cam; 3 4 0 2 5+ 7 6 -> the positive ties with 0, 2 (before) and 7 (after)
        [0.4, 0.0, 0.4, 0.1, 0.2, 0.4, 0.8, 0.4],
        # pid 4 only on the query's camera -> invalid
        [0.3, 0.2, 0.1, 0.0, 0.5, 0.6, 0.7, 0.8],
        # pid 9 not in the gallery -> invalid
        [0.3, 0.2, 0.1, 0.0, 0.5, 0.6, 0.7, 0.8],
    ],
    dtype=np.float32,
)


@pytest.mark.parametrize("fn", [evaluate, evaluate_reference])
def test_hand_computed_standard(fn):
    r = fn(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=6)
    ap0 = (1 / 3 + 2 / 5 + 3 / 6) / 3
    ap1 = 1 / 5
    assert r.num_valid_queries == 2 and r.num_queries == 4
    np.testing.assert_allclose(r.cmc, [0, 0, 0.5, 0.5, 1, 1], atol=1e-12)
    assert r.mAP == pytest.approx((ap0 + ap1) / 2, abs=1e-12)
    assert r.mINP == pytest.approx((3 / 6 + 1 / 5) / 2, abs=1e-12)
    assert r.rank(3) == 0.5 and r.ap_mode == "standard"


@pytest.mark.parametrize("fn", [evaluate, evaluate_reference])
def test_hand_computed_trapezoid(fn):
    r = fn(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=6, ap_mode="trapezoid")
    # (old precision + precision) / 2 per hit, old precision = 1 before a hit at rank 1
    ap0 = ((0 / 2 + 1 / 3) / 2 + (1 / 4 + 2 / 5) / 2 + (2 / 5 + 3 / 6) / 2) / 3
    ap1 = (0 / 4 + 1 / 5) / 2
    assert r.mAP == pytest.approx((ap0 + ap1) / 2, abs=1e-12)
    assert r.mAP == pytest.approx(0.2069444444, abs=1e-9)
    # CMC and mINP do not depend on the AP definition
    np.testing.assert_allclose(r.cmc, [0, 0, 0.5, 0.5, 1, 1], atol=1e-12)


def test_trapezoid_hit_at_rank_one():
    d = np.array([[0.1, 0.2, 0.3]], np.float32)
    r = evaluate(d, [1], [1, 2, 1], [0], [1, 1, 1], ap_mode="trapezoid")
    # hits at ranks 1 and 3: ((1 + 1) / 2 + (1/2 + 2/3) / 2) / 2
    assert r.mAP == pytest.approx((1.0 + (0.5 + 2 / 3) / 2) / 2, abs=1e-12)


@pytest.mark.parametrize("fn", [evaluate, evaluate_reference])
def test_junk_pids_are_dropped(fn):
    r = fn(DIST[:1], Q_PIDS[:1], G_PIDS, Q_CAMS[:1], G_CAMS, max_rank=6, junk_pids=[3])
    # item 3 (pid 3) gone: 5 1 2+ 6+ 4+ 7 -> ranks 3, 4, 5
    assert r.mAP == pytest.approx((1 / 3 + 2 / 4 + 3 / 5) / 3, abs=1e-12)
    assert r.mINP == pytest.approx(3 / 5, abs=1e-12)


def test_max_rank_cut_to_gallery_size():
    r = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    assert len(r.cmc) == 8


# -------------------------------------------------------------------- reference


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dense_max", [0, 128])
@pytest.mark.parametrize("ap_mode", ["standard", "trapezoid"])
def test_fast_equals_reference_with_ties(seed, dense_max, ap_mode):
    case = _random_case(seed)
    ref = evaluate_reference(*case, max_rank=20, ap_mode=ap_mode)
    _assert_same(_fast(*case, max_rank=20, dense_max=dense_max, ap_mode=ap_mode), ref)


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    nq=st.integers(1, 6),
    ng=st.integers(1, 30),
    dense_max=st.sampled_from([0, 128]),
    ap_mode=st.sampled_from(["standard", "trapezoid"]),
    junk_pids=st.sampled_from([None, (0,), (1, 3)]),
)
def test_property_random_small_matrices_match_reference(data, nq, ng, dense_max, ap_mode, junk_pids):
    # few distinct values (ties everywhere), +inf included: it takes the exact path
    values = st.sampled_from([0.0, 0.5, 1.0, 2.0, np.inf])
    d = np.array(data.draw(st.lists(values, min_size=nq * ng, max_size=nq * ng)),
                 np.float32).reshape(nq, ng)
    ids = st.lists(st.integers(0, 3), min_size=nq, max_size=nq)
    gids = st.lists(st.integers(0, 3), min_size=ng, max_size=ng)
    qp, qc = np.array(data.draw(ids)), np.array(data.draw(ids))
    gp, gc = np.array(data.draw(gids)), np.array(data.draw(gids))
    max_rank = data.draw(st.integers(1, 10))
    kw = dict(ap_mode=ap_mode, junk_pids=junk_pids)
    try:
        ref = evaluate_reference(d, qp, gp, qc, gc, max_rank, **kw)
    except EvaluationError:
        with pytest.raises(EvaluationError, match="no valid query"):
            _fast(d, qp, gp, qc, gc, max_rank, dense_max=dense_max, **kw)
        return
    _assert_same(_fast(d, qp, gp, qc, gc, max_rank, dense_max=dense_max, **kw), ref)


def test_many_positives_and_long_rows_match_reference():
    # > 4 positives per query exercise several fused passes; > 128 the binary-search path
    for n_ids, levels in ((3, 7), (40, 1000)):
        case = _random_case(12, nq=20, ng=3000, n_ids=n_ids, n_cams=5, levels=levels)
        ref = evaluate_reference(*case)
        _assert_same(evaluate(*case), ref)
        _assert_same(_fast(*case, dense_max=0), ref)


def test_input_types_give_the_same_result():
    import torch

    d, qp, gp, qc, gc = _random_case(5, nq=30, ng=120)
    base = evaluate(d, qp, gp, qc, gc, 20)
    d64 = d.astype(np.float64)
    _assert_same(evaluate(d64, qp, gp, qc, gc, 20), base)
    _assert_same(evaluate(np.asfortranarray(d), qp, gp, qc, gc, 20), base)  # blocked copies
    _assert_same(evaluate((d * 12).astype(np.int32), qp, gp, qc, gc, 20), base)
    _assert_same(evaluate(torch.from_numpy(d), torch.from_numpy(qp), gp, qc, gc, 20), base)
    # labels of any comparable type: strings and cameras as letters
    _assert_same(evaluate(d, qp.astype(str), gp.astype(str), qc + 10, gc + 10, 20), base)


def test_blocked_path_small_blocks(monkeypatch):
    d, qp, gp, qc, gc = _random_case(6, nq=50, ng=100)
    base = evaluate(d, qp, gp, qc, gc, 20)
    monkeypatch.setattr(reid, "_BLOCK_BYTES", 7 * 100 * 8)  # 7 rows per block
    _assert_same(evaluate(np.asfortranarray(d), qp, gp, qc, gc, 20), base)


# ------------------------------------------------------------------------ errors


def test_errors_name_the_problem():
    d, qp, gp, qc, gc = _random_case(7, nq=10, ng=50)
    with pytest.raises(ValueError, match="shape mismatch.*g_pids has 49"):
        evaluate(d, qp, gp[:-1], qc, gc)
    with pytest.raises(ValueError, match="shape mismatch.*q_camids has 9"):
        evaluate(d, qp, gp, qc[:-1], gc)
    with pytest.raises(ValueError, match="distmat must be 2-D"):
        evaluate(d[0], qp, gp, qc, gc)
    bad = d.copy()
    bad[[2, 5], [3, 7]] = np.nan
    for fn in (evaluate, evaluate_reference):
        with pytest.raises(ValueError, match=r"NaN in 2 of 10 query rows \(rows 2, 5\)"):
            fn(bad, qp, gp, qc, gc)
    with pytest.raises(ValueError, match="no valid query"):
        evaluate(d, qp + 1000, gp, qc, gc)
    with pytest.raises(ValueError, match="ap_mode"):
        evaluate(d, qp, gp, qc, gc, ap_mode="interpolated")


# ------------------------------------------------------------------------- peers


@pytest.mark.parametrize("seed", [10, 11])
def test_matches_torchreid_python(torchreid_rank, seed):
    case = _random_case(seed, nq=60, ng=400)
    cmc, mAP = torchreid_rank.evaluate_rank(*case, max_rank=20, use_cython=False)
    r = evaluate(*case, max_rank=20)
    np.testing.assert_allclose(r.cmc, cmc, rtol=0, atol=1e-6)
    assert r.mAP == pytest.approx(mAP, abs=1e-6)


@pytest.mark.parametrize("seed", [20, 21])
def test_matches_fastreid_python(fastreid_rank, seed):
    case = _random_case(seed, nq=60, ng=400)
    cmc, all_ap, all_inp = fastreid_rank.evaluate_rank(*case, max_rank=20, use_cython=False)
    r = evaluate(*case, max_rank=20)
    np.testing.assert_allclose(r.cmc, cmc, rtol=0, atol=1e-6)
    assert r.mAP == pytest.approx(np.mean(all_ap), abs=1e-6)
    assert r.mINP == pytest.approx(np.mean(all_inp), abs=1e-6)
    assert r.num_valid_queries == len(all_ap)


def test_matches_fastreid_cython(fastreid_cy):
    for seed in (30, 31):
        case = _random_case(seed, nq=200, ng=2000, n_ids=150, n_cams=6, levels=50)
        cmc, all_ap, all_inp = fastreid_cy.evaluate_cy(*case, 50)
        r = evaluate(*case)
        # the Cython code accumulates in float32
        np.testing.assert_allclose(r.cmc, cmc, rtol=0, atol=1e-6)
        assert r.mAP == pytest.approx(np.mean(all_ap), abs=1e-6)
        assert r.mINP == pytest.approx(np.mean(all_inp), abs=1e-6)


def test_peers_on_the_hand_case(torchreid_rank, fastreid_rank):
    ours = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    # two of the four queries have no positive: peers skip them too
    cmc, mAP = torchreid_rank.evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, 5, use_cython=False)
    np.testing.assert_allclose(ours.cmc, cmc, atol=1e-7)
    assert ours.mAP == pytest.approx(mAP, abs=1e-12)
    cmc, aps, inps = fastreid_rank.evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, 5, use_cython=False)
    assert ours.mINP == pytest.approx(np.mean(inps), abs=1e-12)
