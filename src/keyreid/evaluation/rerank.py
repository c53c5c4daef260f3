"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), sparse so that it scales to MSMT17.

The method, as in the authors' code that torchreid, fast-reid and BoT carry:

1. ``d`` is the distance over query + gallery together (N = Q + G images), each row divided
   by its maximum;
2. R(i, k) are the k-reciprocal neighbours of i: j among i's k + 1 nearest with i among
   j's k + 1 nearest;
3. R*(i) = R(i, k1), expanded by R(c, round(k1 / 2)) of each c in R(i, k1) that shares more
   than 2/3 of its members with R(i, k1);
4. V[i, j] = exp(-d[i, j]) over j in R*(i), normalised to sum 1, then (if k2 > 1)
   replaced by the mean of V over i's k2 nearest neighbours (local query expansion);
5. Jaccard distance 1 - s / (2 - s) with s = sum_k min(V[i, k], V[j, k]);
6. final = (1 - lambda) * Jaccard + lambda * d, on the query x gallery block.

The peers build every one of these as a dense N x N matrix (N^2 floats several times over:
about 6 GB for Market-1501, out of reach for MSMT17). Here only the k1 + 1 nearest
neighbours of each image are kept (found chunk by chunk), V is a sparse matrix with a few
dozen entries per row, and the only dense array is the Q x G result. The neighbour sets and
the Jaccard sums are numba kernels. :func:`re_ranking` equals torchreid's dense
implementation (the test holds it to that) when given the same base distance.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.sparse as sp
import torch

from keyreid.evaluation.distance import as_tensor, block_distance, check_finite

__all__ = ["re_ranking"]


def _prepare(query: np.ndarray, gallery: np.ndarray, distance: str) -> torch.Tensor:
    check_finite(query, "query features")
    check_finite(gallery, "gallery features")
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query {query.shape} and gallery {gallery.shape} features must be "
                         "2-D with the same dimension")
    return as_tensor(np.concatenate([query, gallery]), distance)


def _neighbours(feats: torch.Tensor, k: int, distance: str, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest images of each image (itself included), nearest first, and each row's
    largest distance. Memory: one chunk x N block at a time."""
    n = len(feats)
    nearest = np.empty((n, k), dtype=np.int64)
    row_max = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        d = block_distance(feats[s:s + chunk], feats, distance)
        row_max[s:s + chunk] = d.max(1).values.numpy()
        nearest[s:s + chunk] = torch.topk(d, k, dim=1, largest=False, sorted=True).indices.numpy()
    return nearest, row_max


@nb.njit(cache=True, inline="always")
def _reciprocal(nearest: np.ndarray, i: int, k: int, out: np.ndarray) -> int:
    """Write R(i, k) into out; return its size."""
    size = 0
    for a in range(k + 1):
        j = nearest[i, a]
        for b in range(k + 1):
            if nearest[j, b] == i:
                out[size] = j
                size += 1
                break
    return size


@nb.njit(parallel=True, cache=True)
def _expanded_sets(nearest: np.ndarray, k1: int, k_half: int) -> tuple[np.ndarray, np.ndarray]:
    """R*(i) of every image as CSR (indptr, sorted indices)."""
    n = nearest.shape[0]
    width = (k1 + 1) * (k_half + 2)
    buf = np.empty((n, width), dtype=np.int64)
    sizes = np.zeros(n, dtype=np.int64)
    for i in nb.prange(n):
        r = np.empty(k1 + 1, dtype=np.int64)
        rc = np.empty(k_half + 1, dtype=np.int64)
        nr = _reciprocal(nearest, i, k1, r)
        size = nr
        buf[i, :nr] = r[:nr]
        for a in range(nr):
            nc = _reciprocal(nearest, r[a], k_half, rc)
            shared = 0
            for b in range(nc):
                for c in range(nr):
                    if rc[b] == r[c]:
                        shared += 1
                        break
            if shared > 2.0 / 3.0 * nc:
                buf[i, size:size + nc] = rc[:nc]
                size += nc
        members = np.unique(buf[i, :size])
        sizes[i] = len(members)
        buf[i, :len(members)] = members
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(sizes)
    indices = np.empty(indptr[-1], dtype=np.int64)
    for i in nb.prange(n):
        indices[indptr[i]:indptr[i + 1]] = buf[i, :sizes[i]]
    return indptr, indices


@nb.njit(parallel=True, cache=True)
def _set_distances(feats: np.ndarray, indptr: np.ndarray, indices: np.ndarray, cosine: bool) -> np.ndarray:
    """Distance from each image to each member of its R*(i), straight from the features (cosine
    on L2-normalised rows, else squared Euclidean), without gathering feature copies."""
    out = np.empty(len(indices), dtype=np.float64)
    for i in nb.prange(len(indptr) - 1):
        fi = feats[i]
        for p in range(indptr[i], indptr[i + 1]):
            fj = feats[indices[p]]
            acc = 0.0
            if cosine:
                for d in range(fi.shape[0]):
                    acc += fi[d] * fj[d]
                out[p] = 1.0 - acc
            else:
                for d in range(fi.shape[0]):
                    diff = fi[d] - fj[d]
                    acc += diff * diff
                out[p] = acc
    return out


@nb.njit(parallel=True, cache=True)
def _jaccard(v_indptr, v_indices, v_data, c_indptr, c_indices, c_data, num_query, out):
    """out[i, j - Q] = Jaccard distance between row i < Q and row j >= Q of V, given V as CSR
    (rows) and CSC (columns)."""
    for i in nb.prange(num_query):
        row = out[i]
        row[:] = 0.0
        for p in range(v_indptr[i], v_indptr[i + 1]):
            k = v_indices[p]
            vi = v_data[p]
            for q in range(c_indptr[k], c_indptr[k + 1]):
                j = c_indices[q]
                if j >= num_query:
                    row[j - num_query] += min(vi, c_data[q])
        for j in range(row.shape[0]):
            row[j] = 1.0 - row[j] / (2.0 - row[j])


def re_ranking(query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3, distance: str = "cosine",
               dist_qg: np.ndarray | None = None, chunk: int = 1024) -> np.ndarray:
    """Re-ranked float32 [Q, G] distances from query and gallery features.

    ``distance`` is the base distance (cosine: 1 - cos; euclidean: squared Euclidean, as
    keyreid.evaluation.distance.distance_matrix). ``dist_qg``, when the caller already has
    that matrix, saves recomputing its query x gallery block. Defaults are the paper's
    (k1 20, k2 6, lambda 0.3).
    """
    query = np.asarray(query)
    gallery = np.asarray(gallery)
    feats = _prepare(query, gallery, distance)
    num_query, n = len(query), len(feats)
    if not 1 <= k2 <= k1 + 1:
        raise ValueError(f"re-ranking needs 1 <= k2 <= k1 + 1 (got k1={k1}, k2={k2})")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"re-ranking lambda must lie in [0, 1] (got {lambda_value})")
    if n < k1 + 1:
        raise ValueError(f"re-ranking with k1={k1} needs more than {k1} images in query + gallery "
                         f"(got {n}); lower eval.rerank_k1")
    if dist_qg is not None and dist_qg.shape != (num_query, n - num_query):
        raise ValueError(f"dist_qg has shape {dist_qg.shape}, expected {(num_query, n - num_query)}")

    nearest, row_max = _neighbours(feats, k1 + 1, distance, chunk)
    row_max = np.maximum(row_max, np.finfo(np.float32).tiny)  # all-identical rows: no 0 / 0
    k_half = int(np.around(k1 / 2.0))
    indptr, indices = _expanded_sets(nearest, k1, k_half)

    # V: exp(-normalised distance) over each R*(i), rows summing to 1.
    rows = np.repeat(np.arange(n), np.diff(indptr))
    weights = _set_distances(feats.numpy(), indptr, indices, distance == "cosine")
    weights = np.exp(-weights / row_max[rows])
    weights /= np.bincount(rows, weights, minlength=n)[rows]  # (bincount: empty rows allowed)
    v = sp.csr_matrix((weights, indices, indptr), shape=(n, n))
    if k2 > 1:
        expand = sp.csr_matrix((np.full(n * k2, 1.0 / k2), nearest[:, :k2].ravel(),
                                np.arange(0, n * k2 + 1, k2)), shape=(n, n))
        v = (expand @ v).tocsr()
    v.sort_indices()
    vc = v.tocsc()
    vc.sort_indices()

    out = np.empty((num_query, n - num_query), dtype=np.float32)
    _jaccard(v.indptr, v.indices, v.data, vc.indptr, vc.indices, vc.data, num_query, out)
    out *= 1.0 - lambda_value
    q_feats, g_feats = feats[:num_query], feats[num_query:]
    for s in range(0, num_query, chunk):
        e = min(s + chunk, num_query)
        if dist_qg is None:
            base = block_distance(q_feats[s:e], g_feats, distance).numpy()
        else:
            base = np.asarray(dist_qg[s:e], dtype=np.float32)
        out[s:e] += (lambda_value / row_max[s:e, None]) * base
    return out
