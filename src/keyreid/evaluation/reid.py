"""Re-identification ranking evaluation: CMC, mAP and mINP.

Protocol (the one torchreid and fast-reid use, see shared/notes/protocols.md):

1. per query, order the gallery by ascending distance with a *stable* sort
   (equal distances keep gallery order);
2. drop gallery items with the same pid and the same camera as the query
   (and, optionally, items whose pid is in ``junk_pids``);
3. skip queries with no remaining positive and average over the valid ones;
4. CMC: cumulative hit indicator clipped to 1, cut at ``max_rank``;
5. AP: mean of the precision at each hit (non-interpolated, the default);
6. mINP: number of positives / 1-based rank of the hardest positive.

Every metric depends only on the ranks of a query's positives, so
:func:`evaluate` never sorts the gallery: the rank of a positive is the number of
valid items that come before it (smaller distance, or equal distance and an
earlier gallery index) plus one.  That is counted with a numba kernel, one query
per thread, reading the distance matrix in place (no copy when it is a
C-contiguous float32/float64 array).  :func:`evaluate_reference` is the plain
sort-based NumPy version the tests hold it against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numba as nb
import numpy as np

from keyreid.errors import KeyreidError

__all__ = ["EvaluationError", "ReidMetrics", "evaluate", "evaluate_reference", "AP_MODES"]

AP_MODES = ("standard", "trapezoid")

# Below this many positives per query, one vectorised pass over the row per positive
# beats a single branchy pass with a binary search per gallery item.
_DENSE_MAX_POSITIVES = 128
# Non-contiguous or oddly typed inputs are converted in blocks of about this many bytes,
# so memory stays at the distance matrix plus one block.
_BLOCK_BYTES = 256 * 1024 * 1024


class EvaluationError(KeyreidError, ValueError):
    """Inputs that cannot be evaluated: wrong shapes, NaN distances, no valid query."""


@dataclass(frozen=True)
class ReidMetrics:
    """Result of a re-id evaluation.

    ``cmc[k - 1]`` is the rank-k accuracy; mAP and mINP are fractions in [0, 1].
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_queries: int
    ap_mode: str = "standard"

    def rank(self, k: int) -> float:
        """Rank-k accuracy (CMC at k, 1-based)."""
        return float(self.cmc[k - 1])

    def summary(self, ranks: Iterable[int] = (1, 5, 10, 20)) -> dict[str, float]:
        out = {"mAP": self.mAP, "mINP": self.mINP}
        out.update({f"rank{k}": self.rank(k) for k in ranks if k <= len(self.cmc)})
        return out


# --------------------------------------------------------------------------- inputs


def _as_numpy(x, name: str, ndim: int) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != ndim:
        raise EvaluationError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode):
    d = _as_numpy(distmat, "distmat", 2)
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise EvaluationError(f"distmat must hold real numbers, got dtype {d.dtype}")
    nq, ng = d.shape
    arrays = []
    for name, a, n, side in (
        ("q_pids", q_pids, nq, "rows"),
        ("g_pids", g_pids, ng, "columns"),
        ("q_camids", q_camids, nq, "rows"),
        ("g_camids", g_camids, ng, "columns"),
    ):
        a = _as_numpy(a, name, 1)
        if len(a) != n:
            raise EvaluationError(
                f"shape mismatch: distmat has {n} {side} ({d.shape}) but {name} has {len(a)} entries"
            )
        arrays.append(a)
    if nq == 0 or ng == 0:
        raise EvaluationError(f"distmat is empty: shape {d.shape}")
    if int(max_rank) < 1:
        raise EvaluationError(f"max_rank must be >= 1, got {max_rank}")
    if ap_mode not in AP_MODES:
        raise EvaluationError(f"ap_mode must be one of {AP_MODES}, got {ap_mode!r}")
    # Peers cut max_rank to the gallery size; do the same so CMC lengths agree.
    return d, arrays, min(int(max_rank), ng)


def _nan_error(nan_rows: np.ndarray, shape) -> EvaluationError:
    idx = np.flatnonzero(nan_rows)
    head = ", ".join(str(i) for i in idx[:5]) + (", ..." if len(idx) > 5 else "")
    return EvaluationError(
        f"distmat {shape} has NaN in {len(idx)} of {shape[0]} query rows (rows {head})"
    )


def _no_valid_error(nq: int) -> EvaluationError:
    return EvaluationError(
        f"no valid query: none of the {nq} queries has a positive left in the gallery "
        "(same pid on a different camera)"
    )


def _aggregate(first_rank, ap, inp, valid, max_rank, nq, ap_mode) -> ReidMetrics:
    nvalid = int(valid.sum())
    if nvalid == 0:
        raise _no_valid_error(nq)
    r = first_rank[valid]
    hits = np.bincount(np.minimum(r, max_rank + 1) - 1, minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hits) / nvalid
    return ReidMetrics(
        cmc=cmc,
        mAP=float(np.mean(ap[valid])),
        mINP=float(np.mean(inp[valid])),
        num_valid_queries=nvalid,
        num_queries=nq,
        ap_mode=ap_mode,
    )


# ------------------------------------------------------------------ reference (NumPy)


def _ap_from_ranks(ranks: np.ndarray, ap_mode: str) -> float:
    """AP from the sorted 1-based ranks of all positives."""
    m = len(ranks)
    hits_so_far = np.arange(1, m + 1)
    precision = hits_so_far / ranks
    if ap_mode == "standard":
        return float(precision.mean())
    # Market-1501 MATLAB / Person_reID_baseline_pytorch: trapezoid between the precision
    # just before the hit and at the hit; before a hit at rank 1 the precision counts as 1.
    old = np.where(ranks == 1, 1.0, (hits_so_far - 1) / np.maximum(ranks - 1, 1))
    return float(np.sum((old + precision) / 2.0) / m)


def evaluate_reference(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    *,
    ap_mode: str = "standard",
    junk_pids: Iterable | None = None,
) -> ReidMetrics:
    """Plain sort-based implementation of the protocol; slow, kept for testing."""
    d, (qp, gp, qc, gc), max_rank = _check_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode
    )
    nq = d.shape[0]
    nan_rows = np.isnan(d).any(axis=1) if np.issubdtype(d.dtype, np.floating) else None
    if nan_rows is not None and nan_rows.any():
        raise _nan_error(nan_rows, d.shape)
    junk = np.isin(gp, list(junk_pids)) if junk_pids is not None else np.zeros(len(gp), bool)

    first_rank = np.zeros(nq, np.int64)
    ap = np.zeros(nq)
    inp = np.zeros(nq)
    valid = np.zeros(nq, bool)
    for i in range(nq):
        order = np.argsort(d[i], kind="stable")
        same_pid = gp[order] == qp[i]
        keep = ~(same_pid & (gc[order] == qc[i])) & ~junk[order]
        matches = same_pid[keep]
        if not matches.any():
            continue
        ranks = np.flatnonzero(matches) + 1
        valid[i] = True
        first_rank[i] = ranks[0]
        ap[i] = _ap_from_ranks(ranks, ap_mode)
        inp[i] = len(ranks) / ranks[-1]
    return _aggregate(first_rank, ap, inp, valid, max_rank, nq, ap_mode)


# --------------------------------------------------------------------- fast (numba)


@nb.njit(inline="always")
def _count_below4(seg, w0, w1, w2, w3):
    # Zero-based range over a slice: numba then knows the index is not negative and LLVM
    # vectorises the loop (a range(start, end) loop here runs ~4x slower).
    c0 = np.int32(0)
    c1 = np.int32(0)
    c2 = np.int32(0)
    c3 = np.int32(0)
    for j in range(seg.shape[0]):
        x = seg[j]
        c0 += np.int32(x < w0)
        c1 += np.int32(x < w1)
        c2 += np.int32(x < w2)
        c3 += np.int32(x < w3)
    return c0, c1, c2, c3


@nb.njit(cache=True, nogil=True)
def _items_ahead(row, ps):
    """For each gallery index ps[t]: how many items of `row` come before it in the stable
    order (smaller value, or equal value and smaller index).  Four targets per pass."""
    m = ps.shape[0]
    ng = row.shape[0]
    out = np.zeros(m, np.int64)
    inf = np.empty(1, row.dtype)
    inf[0] = np.inf
    v = np.empty(4, row.dtype)
    up = np.empty(4, row.dtype)
    w = np.empty(4, row.dtype)
    pp = np.empty(4, np.int64)
    acc = np.zeros(4, np.int64)
    for t0 in range(0, m, 4):
        k = min(4, m - t0)
        for u in range(4):
            p = ps[t0 + min(u, k - 1)]  # a short last group repeats its last target
            v[u] = row[p]
            up[u] = np.nextafter(v[u], inf[0])
            pp[u] = p
        bounds = np.sort(pp)
        acc[:] = 0
        start = 0
        # Split the row at the targets' indices: before index p an equal value counts
        # (x <= v, i.e. x < nextafter(v)), from p on only smaller values do (x < v).
        for s in range(5):
            end = bounds[s] if s < 4 else ng
            if end > start:
                for u in range(4):
                    w[u] = up[u] if end <= pp[u] else v[u]
                c0, c1, c2, c3 = _count_below4(row[start:end], w[0], w[1], w[2], w[3])
                acc[0] += c0
                acc[1] += c1
                acc[2] += c2
                acc[3] += c3
            start = end
        for u in range(k):
            out[t0 + u] = acc[u]
    return out


@nb.njit(inline="always")
def _ahead(row, i, p, v):
    x = row[i]
    return x < v or (x == v and i < p)


@nb.njit(cache=True, nogil=True)
def _query_ranks(row, gg, g, pos, dropped, junk_idx, dense_max):
    """1-based ranks (ascending) of the positives `pos` (gallery indices, ascending) in `row`.

    Valid items are gallery items j with gg[j] >= 0 and not in `dropped` (the query's
    same-pid, same-camera items); junk_idx lists the items with gg[j] < 0.
    """
    m = pos.shape[0]
    # Stable sort of the positives by distance: their order among themselves.
    pd = np.empty(m, np.float64)
    for t in range(m):
        pd[t] = row[pos[t]]
    ps = pos[np.argsort(pd, kind="mergesort")]
    ranks = np.empty(m, np.int64)
    ng = row.shape[0]
    vmax = row[ps[m - 1]]
    # nextafter cannot express "<= +inf" as "<", so +inf positives take the exact path.
    if m <= dense_max and vmax < np.inf:
        # Count every item ahead, then take off the invalid ones (few: same-camera
        # matches and junk) with exact comparisons.
        ahead = _items_ahead(row, ps)
        for t in range(m):
            p = ps[t]
            v = row[p]
            c = 0
            for i in dropped:
                c += _ahead(row, i, p, v)
            for i in junk_idx:
                c += _ahead(row, i, p, v)
            ranks[t] = ahead[t] - c + 1
        return ranks
    # Many positives: one pass, each valid negative falls into the bucket of the first
    # positive it precedes (binary search over the sorted positives).
    bucket = np.zeros(m + 1, np.int64)
    for j in range(ng):
        x = row[j]
        if x <= vmax:
            gj = gg[j]
            if gj != g and gj >= 0:
                lo = 0
                hi = m
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if _ahead(row, j, ps[mid], row[ps[mid]]):
                        hi = mid
                    else:
                        lo = mid + 1
                bucket[lo] += 1
    c = 0
    for t in range(m):
        c += bucket[t]
        ranks[t] = c + t + 1
    return ranks


@nb.njit(parallel=True, cache=True, nogil=True)
def _rank_kernel(dist, qg, qc, gg, gc, members, offsets, junk_idx, dense_max, trapezoid,
                 first_rank, ap, inp, apr, nan_row):
    """Per-query metrics for the rows of `dist`; results written into the output arrays.

    first_rank = 0 marks a query without a valid positive.  apr is AP@R (R = number
    of positives), used by retrieval's MAP@R.
    """
    nq = dist.shape[0]
    ng = dist.shape[1]
    for i in nb.prange(nq):
        row = dist[i]
        nn = np.int32(0)
        for j in range(ng):
            nn += np.int32(row[j] != row[j])
        nan_row[i] = nn > 0
        first_rank[i] = 0
        g = qg[i]
        if g < 0 or nn > 0:
            continue
        lo = offsets[g]
        hi = offsets[g + 1]
        m = 0
        for k in range(lo, hi):
            m += gc[members[k]] != qc[i]
        if m == 0:
            continue
        pos = np.empty(m, np.int64)
        dropped = np.empty(hi - lo - m, np.int64)
        m = 0
        nd = 0
        for k in range(lo, hi):
            if gc[members[k]] != qc[i]:
                pos[m] = members[k]
                m += 1
            else:
                dropped[nd] = members[k]
                nd += 1
        ranks = _query_ranks(row, gg, g, pos, dropped, junk_idx, dense_max)
        s = 0.0
        s_r = 0.0
        for t in range(m):
            prec = (t + 1.0) / ranks[t]
            if trapezoid:
                old = 1.0 if ranks[t] == 1 else t / (ranks[t] - 1.0)
                s += (old + prec) / 2.0
            else:
                s += prec
            if ranks[t] <= m:
                s_r += prec
        first_rank[i] = ranks[0]
        ap[i] = s / m
        apr[i] = s_r / m
        inp[i] = m / ranks[m - 1]


def _encode(qp, gp, qc, gc, junk_pids):
    """Integer codes for the kernel: gallery pid groups (junk = -1), query group
    (-1 = pid absent from the gallery), camera codes, and the gallery members of each group."""
    uniq, g_inv = np.unique(gp, return_inverse=True)
    g_inv = g_inv.reshape(-1).astype(np.int64)
    pos = np.searchsorted(uniq, qp)
    pos_c = np.minimum(pos, len(uniq) - 1)
    qg = np.where(uniq[pos_c] == qp, pos_c, -1).astype(np.int64)
    if junk_pids is not None:
        junk_u = np.isin(uniq, np.asarray(list(junk_pids)))
        gg = np.where(junk_u[g_inv], -1, g_inv)
        qg = np.where((qg >= 0) & junk_u[np.maximum(qg, 0)], -1, qg)
    else:
        gg = g_inv
    members = np.argsort(g_inv, kind="stable").astype(np.int64)  # ascending index per group
    offsets = np.zeros(len(uniq) + 1, np.int64)
    np.cumsum(np.bincount(g_inv, minlength=len(uniq)), out=offsets[1:])
    _, cam_inv = np.unique(np.concatenate([np.asarray(qc).ravel(), np.asarray(gc).ravel()]),
                           return_inverse=True)
    cam_inv = cam_inv.reshape(-1).astype(np.int32)
    junk_idx = np.flatnonzero(gg < 0).astype(np.int64)
    return (qg, cam_inv[: len(qc)].copy(), gg.astype(np.int32), cam_inv[len(qc):].copy(),
            members, offsets, junk_idx)


def _per_query(d, qg, qc, gg, gc, members, offsets, junk_idx, trapezoid,
               dense_max=_DENSE_MAX_POSITIVES):
    """Run the kernel over all rows; converts in blocks when the matrix is not usable in place."""
    nq, ng = d.shape
    first_rank = np.zeros(nq, np.int64)
    ap = np.zeros(nq)
    inp = np.zeros(nq)
    apr = np.zeros(nq)
    nan_row = np.zeros(nq, np.bool_)
    in_place = d.dtype in (np.float32, np.float64) and d.flags.c_contiguous
    if in_place:
        bounds = [(0, nq)]
    else:
        target = np.float32 if d.dtype.itemsize <= 2 and d.dtype.kind == "f" else np.float64
        step = max(1, _BLOCK_BYTES // (ng * np.dtype(target).itemsize))
        bounds = [(s, min(s + step, nq)) for s in range(0, nq, step)]
    for s, e in bounds:
        block = d if in_place else np.ascontiguousarray(d[s:e], dtype=target)
        _rank_kernel(block, qg[s:e], qc[s:e], gg, gc, members, offsets, junk_idx, dense_max, trapezoid,
                     first_rank[s:e], ap[s:e], inp[s:e], apr[s:e], nan_row[s:e])
    return first_rank, ap, inp, apr, nan_row


def evaluate(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    *,
    ap_mode: str = "standard",
    junk_pids: Iterable | None = None,
) -> ReidMetrics:
    """CMC, mAP and mINP of a (num_query, num_gallery) distance matrix (smaller = closer).

    Args:
        distmat: distances; float32/float64 C-contiguous arrays are used in place.
        q_pids, g_pids, q_camids, g_camids: 1-D identity and camera labels.
        max_rank: CMC length (cut to the gallery size when that is smaller, as peers do).
        ap_mode: "standard" (non-interpolated AP, what torchreid and fast-reid report) or
            "trapezoid" (the Market-1501 MATLAB definition, a different number).
        junk_pids: gallery pids to drop like same-camera matches (the MATLAB script uses -1).

    Raises:
        EvaluationError (a ValueError): shape mismatch, NaN distances, or no valid query.
    """
    d, (qp, gp, qc, gc), max_rank = _check_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode
    )
    codes = _encode(qp, gp, qc, gc, junk_pids)
    first_rank, ap, inp, _, nan_row = _per_query(d, *codes, trapezoid=ap_mode == "trapezoid")
    if nan_row.any():
        raise _nan_error(nan_row, d.shape)
    return _aggregate(first_rank, ap, inp, first_rank > 0, max_rank, d.shape[0], ap_mode)
