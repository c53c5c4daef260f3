"""Each image's k nearest images and its farthest distance among N = Q + G images: all that
k-reciprocal re-ranking needs from the N x N distances, found without keeping them.

Exact pass (:func:`exact_neighbours`): float32 blocks of the distance matrix (torch GEMM),
top-k per row. N^2 d float32 multiply-adds: this CPU's float32 floor.

Fast pass (:func:`fast_neighbours`), same lists: the query x gallery block is computed in
float32 anyway (it is the base term of the re-ranked matrix), so the lists' query-gallery part
comes from it for free; the query x query and gallery x gallery parts come from a bfloat16
GEMM (about 5x the float32 rate on a CPU with avx512_bf16) over the upper triangle only
(the parts are symmetric: one numba scan of each row strip keeps the candidates of its rows
and, read by columns, of the rows below it), whose candidates (the k + 6 nearest and 4
farthest by bf16; 40 + k and 16 for rows the first round cannot certify) get exact float64
distances. A row is accepted only when a proven
bound on the bf16 error shows that no image outside its candidates can be nearer than its k-th
neighbour or farther than its farthest; other rows are recomputed in float32. The lists are
therefore the exact pass's (up to float32-level near-ties), not an approximation with a
recall: ``FastStats`` reports how many rows needed the float32 fallback.

Error bound (per pair x, y; u = 2^-8 for bfloat16, gamma = d 2^-24 for the float32 sums of
exact bf16 products, r = x - bf16(x)):
    |bf16_gemm(x, y) - x.y| <= u |bf16_gemm(x, y)| + gamma |x~||y~| + |r_x||y~| + |x||r_y|
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np
import torch

from keyreid.evaluation.distance import block_distance

__all__ = ["exact_neighbours", "fast_neighbours", "pair_distances", "FastStats", "bf16_fast"]

U_BF16 = 2.0 ** -8
U_F32 = 2.0 ** -24
# bf16 candidates per row beyond the k needed, and for the row's farthest image; a row the
# first round cannot certify gets the second round's (kept by the same scan), then float32.
# Each candidate costs one random read of a feature row; a float32 row about as much as 300.
NEAR_EXTRA, FAR_CANDIDATES = 6, 4
MORE_NEAR_EXTRA, MORE_FAR_CANDIDATES = 40, 16


@dataclass
class FastStats:
    rows: int = 0            # rows whose lists came from bf16 candidates
    second_round: int = 0    # rows the first, small candidate set could not certify
    fallback_rows: int = 0   # rows recomputed in float32 because the bound could not certify them


def bf16_fast() -> bool:
    """True where torch has a oneDNN bfloat16 GEMM (avx512_bf16 / AMX): the fast pass's premise."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - torch builds without oneDNN
        return False


def exact_neighbours(feats: torch.Tensor, k: int, metric: str, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest images of each image (itself included), nearest first, and each row's
    largest distance, from float32 blocks of one chunk x N at a time."""
    n = len(feats)
    nearest = np.empty((n, k), dtype=np.int64)
    row_max = np.empty(n, dtype=np.float64)
    g2 = (feats * feats).sum(1) if metric == "euclidean" else None
    for s in range(0, n, chunk):
        d = block_distance(feats[s:s + chunk], feats, metric, g2)
        row_max[s:s + chunk] = d.max(1).values.numpy()
        nearest[s:s + chunk] = torch.topk(d, k, dim=1, largest=False, sorted=True).indices.numpy()
    return nearest, row_max


@nb.njit(parallel=True, cache=True, fastmath=True)
def pair_distances(feats: np.ndarray, rows: np.ndarray, cols: np.ndarray, cosine: bool) -> np.ndarray:
    """float64 distance of each pair (feats[rows[p]], feats[cols[p]]): 1 - dot (cosine, rows
    L2-normalised) or the squared Euclidean distance, accumulated in float64. fastmath only lets
    LLVM reorder the float64 sum into SIMD lanes (error ~ d 2^-53, far below float32's)."""
    out = np.empty(len(rows), dtype=np.float64)
    dim = feats.shape[1]
    for p in nb.prange(len(rows)):
        fi = feats[rows[p]]
        fj = feats[cols[p]]
        acc = 0.0
        if cosine:
            for d in range(dim):
                acc += np.float64(fi[d]) * np.float64(fj[d])
            out[p] = 1.0 - acc
        else:
            for d in range(dim):
                diff = np.float64(fi[d]) - np.float64(fj[d])
                acc += diff * diff
            out[p] = acc
    return out


def _exact_part(base_qg: np.ndarray, k: int, chunk: int):
    """From the float32 query x gallery block: each query's k nearest gallery images and its
    largest distance to the gallery, and each gallery image's k nearest queries and largest
    distance to the queries (values float64, indices global: gallery j is Q + j)."""
    nq, ng = base_qg.shape
    kq, kg = min(k, ng), min(k, nq)
    q_val, q_idx = np.empty((nq, kq)), np.empty((nq, kq), np.int64)
    g_val, g_idx = np.empty((ng, kg)), np.empty((ng, kg), np.int64)
    q_max, g_max = np.empty(nq), np.empty(ng)
    qg = torch.from_numpy(base_qg)
    for s in range(0, nq, chunk):
        block = qg[s:s + chunk]
        top = torch.topk(block, kq, dim=1, largest=False, sorted=True)
        q_val[s:s + chunk], q_idx[s:s + chunk] = top.values.numpy(), top.indices.numpy() + nq
        q_max[s:s + chunk] = block.max(1).values.numpy()
    for s in range(0, ng, chunk):
        block = qg[:, s:s + chunk].T.contiguous()
        top = torch.topk(block, kg, dim=1, largest=False, sorted=True)
        g_val[s:s + chunk], g_idx[s:s + chunk] = top.values.numpy(), top.indices.numpy()
        g_max[s:s + chunk] = block.max(1).values.numpy()
    return (q_val, q_idx, q_max), (g_val, g_idx, g_max)


class _Part:
    """One column part (the queries or the gallery): its bf16 rows and the column maxima of the
    error bound's quantities."""

    def __init__(self, feats: torch.Tensor, feats_bf16: torch.Tensor, norm_b: np.ndarray,
                 norm_r: np.ndarray, sq: np.ndarray, start: int, stop: int, metric: str):
        self.start, self.size = start, stop - start
        self.bf16 = feats_bf16[start:stop]
        cols = feats[start:stop]
        self.sq32 = (cols * cols).sum(1) if metric == "euclidean" else None
        self.y_max = float(norm_b[start:stop].max())
        self.r_max = float(norm_r[start:stop].max())
        self.sq_max = float(sq[start:stop].max())


def _bounds(rows, part: _Part, norm: np.ndarray, norm_b: np.ndarray, norm_r: np.ndarray,
            sq: np.ndarray, dim: int, metric: str):
    """Per row i, a bound on |a_ij - d_ij| for every column j of the part, where a is the
    approximate distance (cosine: 1 - c~; Euclidean: sq_i + sq_j - 2 c~ in float32): for
    cosine without the u |c~_ij| term, which the caller adds for the value at hand."""
    gamma = dim * U_F32 / (1 - dim * U_F32)
    rest = (gamma * norm_b[rows] * part.y_max + norm_r[rows] * part.y_max + norm[rows] * part.r_max) * 1.01 + 1e-30
    if metric == "cosine":
        return rest + 4 * U_F32  # + the float32 rounding of 1 - c~ and of the bound's own terms
    c_max = norm_b[rows] * part.y_max * (1 + U_BF16) * (1 + gamma)
    rounding = 3 * U_F32 * (sq[rows] + part.sq_max + 2 * c_max)  # the float32 sums forming a
    return 2 * (U_BF16 * c_max + rest) + gamma * (part.sq_max + sq[rows]) + rounding + 1e-30


def fast_neighbours(feats: torch.Tensor, num_query: int, base_qg: np.ndarray, k: int, metric: str,
                    chunk: int) -> tuple[np.ndarray, np.ndarray, FastStats]:
    """:func:`exact_neighbours`'s lists and row maxima from the float32 query x gallery block
    `base_qg` plus bf16 candidates for the query x query and gallery x gallery parts."""
    n, dim = feats.shape
    feats_np = feats.numpy()
    cosine = metric == "cosine"
    norm = torch.linalg.vector_norm(feats, dim=1).double().numpy()
    feats_bf16 = feats.to(torch.bfloat16)
    rounded = feats_bf16.float()
    norm_b = torch.linalg.vector_norm(rounded, dim=1).double().numpy()
    norm_r = torch.linalg.vector_norm(feats - rounded, dim=1).double().numpy()  # exact difference
    del rounded
    sq = norm * norm
    nearest = np.empty((n, k), dtype=np.int64)
    row_max = np.empty(n, dtype=np.float64)
    stats = FastStats()
    exact_q, exact_g = _exact_part(base_qg, k, chunk)
    for start, stop, exact_info in ((0, num_query, exact_q), (num_query, n, exact_g)):
        if stop == start:
            continue
        part = _Part(feats, feats_bf16, norm_b, norm_r, sq, start, stop, metric)
        # the scan keeps the most candidates any round uses, plus one: the boundary
        kn2 = min(k + MORE_NEAR_EXTRA, part.size)
        kf2 = min(MORE_FAR_CANDIDATES, part.size)
        near, far = _symmetric_candidates(part, kn2, kf2, cosine, chunk)
        kn1, kf1 = min(k + NEAR_EXTRA, kn2), min(FAR_CANDIDATES, kf2)
        for s in range(start, stop, chunk):
            e = min(s + chunk, stop)
            rows = np.arange(s, e)
            bound = _bounds(rows, part, norm, norm_b, norm_r, sq, dim, metric)
            todo = np.arange(len(rows))
            # few candidates first; the rows they cannot certify try all kept, then float32
            for kn, kf in ((kn1, kf1), (kn2, kf2)):
                local = todo + (s - start)
                ok = _certify(near[0][local], near[1][local], far[0][local], far[1][local], rows[todo],
                              bound[todo], part, exact_info, k, kn, kf, cosine, feats_np, nearest, row_max)
                todo = todo[~ok]
                if kn == kn1:
                    stats.second_round += len(todo)
                if not len(todo):
                    break
            stats.rows += len(rows)
            if len(todo):
                stats.fallback_rows += len(todo)
                _fallback(feats, rows[todo], part, exact_info, k, metric, nearest, row_max)
    return nearest, row_max, stats


def _approx(part: _Part, rows, cols: slice, cosine: bool) -> torch.Tensor:
    """float32 approximate distances of part rows `rows` to part columns `cols` from the bf16
    GEMM: 1 - c~, or sq_i + sq_j - 2 c~."""
    c = (part.bf16[rows] @ part.bf16[cols].T).float()
    if cosine:
        return c.neg_().add_(1.0)
    return c.mul_(-2).add_(part.sq32[cols][None]).add_(part.sq32[rows][:, None])


@nb.njit(cache=True, inline="always")
def _offer(v: float, j: int, vals: np.ndarray, idx: np.ndarray, sign: float) -> None:
    """Insert (v, j) into the sorted best list (vals, idx) when it beats the worst entry;
    sign 1 keeps the smallest values, -1 the largest."""
    m = len(vals)
    if sign * v >= sign * vals[m - 1]:
        return
    p = m - 1
    while p > 0 and sign * vals[p - 1] > sign * v:
        vals[p] = vals[p - 1]
        idx[p] = idx[p - 1]
        p -= 1
    vals[p] = v
    idx[p] = j


@nb.njit(parallel=True, cache=True)
def _scan_strip(a, r0, near_v, near_i, far_v, far_i):
    """One pass over the block a = rows r0:r0+h x columns r0:r0+w of the symmetric matrix:
    each row keeps its nearest and farthest columns, and (the block read by columns) each row
    below the strip, r0+h.., keeps its nearest and farthest among rows r0:r0+h."""
    h, w = a.shape
    for r in nb.prange(h):
        row = r0 + r
        for c in range(w):
            _offer(a[r, c], r0 + c, near_v[row], near_i[row], 1.0)
            _offer(a[r, c], r0 + c, far_v[row], far_i[row], -1.0)
    width = 64
    blocks = (w - h + width - 1) // width
    for b in nb.prange(blocks):
        c0 = h + b * width
        c1 = min(c0 + width, w)
        for r in range(h):
            for c in range(c0, c1):
                _offer(a[r, c], r0 + r, near_v[r0 + c], near_i[r0 + c], 1.0)
                _offer(a[r, c], r0 + r, far_v[r0 + c], far_i[r0 + c], -1.0)


def _symmetric_candidates(part: _Part, kn: int, kf: int, cosine: bool, chunk: int):
    """Each part row's kn + 1 nearest and kf + 1 farthest columns by the approximate distance
    (values sorted, part-local indices), computing only the upper triangle of the symmetric
    part x part matrix: a row strip serves its own rows and, transposed, the rows below it."""
    size = part.size
    cn, cf = min(kn + 1, size), min(kf + 1, size)
    near_v, near_i = np.full((size, cn), np.inf, np.float32), np.full((size, cn), -1, np.int64)
    far_v, far_i = np.full((size, cf), -np.inf, np.float32), np.full((size, cf), -1, np.int64)
    for r0 in range(0, size, chunk):
        r1 = min(r0 + chunk, size)
        a = _approx(part, slice(r0, r1), slice(r0, size), cosine)  # rows r0:r1, columns r0:size
        _scan_strip(a.numpy(), r0, near_v, near_i, far_v, far_i)
    return (near_v, near_i), (far_v, far_i)


def _merge(exact_info, rows, start, val, idx, k, nearest):
    """The k nearest of the exact part's and the candidates' (value, index), ties by index;
    returns the k-th value. An image among both the nearest and the farthest candidates (a
    small part, or a row of ties) counts once."""
    ex_val, ex_idx, _ = exact_info
    local = rows - start
    cand_val = np.concatenate([ex_val[local], val], 1)
    cand_idx = np.concatenate([ex_idx[local], idx], 1)
    order = np.lexsort((cand_idx, cand_val), axis=1)
    cand_val, cand_idx = np.take_along_axis(cand_val, order, 1), np.take_along_axis(cand_idx, order, 1)
    repeat = np.zeros(cand_idx.shape, dtype=bool)
    repeat[:, 1:] = cand_idx[:, 1:] == cand_idx[:, :-1]  # same pair, same value: adjacent
    if repeat.any():
        cand_val = np.where(repeat, np.inf, cand_val)
        order = np.lexsort((cand_idx, cand_val), axis=1)
        cand_val, cand_idx = np.take_along_axis(cand_val, order, 1), np.take_along_axis(cand_idx, order, 1)
    nearest[rows] = cand_idx[:, :k]
    return cand_val[:, k - 1]


def _certify(near_v, near_i, far_v, far_i, rows, bound, part, exact_info, k, kn, kf, cosine, feats_np,
             nearest, row_max):
    """Lists and maxima of `rows` from their kn nearest and kf farthest bf16 candidates
    (part-local indices, approximate distances sorted, one more than used: the boundary) with
    exact float64 distances; True where the bound proves that no other image of the part is
    nearer than the k-th or farther than the farthest."""
    both = np.concatenate([near_i[:, :kn], far_i[:, :kf]], 1) + part.start
    exact = pair_distances(feats_np, np.repeat(rows, both.shape[1]), both.ravel(), cosine).reshape(len(rows), -1)
    kth = _merge(exact_info, rows, part.start, exact, both, k, nearest)
    row_max[rows] = np.maximum(exact_info[2][rows - part.start], exact.max(1))
    margin = 1e-6 * (np.abs(kth) + (1.0 if cosine else row_max[rows]))  # float32-level near-ties
    slack = (lambda a: U_BF16 * np.abs(1.0 - a) + bound) if cosine else (lambda a: bound)
    ok = np.ones(len(rows), dtype=bool)
    if kn < part.size:  # no image outside the candidates may be as near as the k-th
        b = near_v[:, kn].astype(np.float64)
        ok &= b - slack(b) > kth + margin
    if kf < part.size:  # nor farther than the farthest
        b = far_v[:, kf].astype(np.float64)
        ok &= b + slack(b) <= row_max[rows] - margin
    return ok


def _fallback(feats, bad, part, exact_info, k, metric, nearest, row_max):
    """Rows the bound could not certify: their part of the distances in float32, as the exact pass."""
    cols = feats[part.start:part.start + part.size]
    d = block_distance(feats[torch.from_numpy(bad)], cols, metric, part.sq32)
    top = torch.topk(d, min(k, part.size), dim=1, largest=False, sorted=True)
    _merge(exact_info, bad, part.start, top.values.double().numpy(), top.indices.numpy() + part.start, k, nearest)
    row_max[bad] = np.maximum(exact_info[2][bad - part.start], d.max(1).values.double().numpy())
