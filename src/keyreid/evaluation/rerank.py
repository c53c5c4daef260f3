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
neighbours of each image and its largest distance are kept (keyreid.evaluation.nearest:
float32 over all pairs with ``exact=True``, by default bfloat16 candidates certified by an
error bound, the same lists), V is a sparse matrix with a few dozen entries per row, and the
only dense array is the Q x G result, which holds the base distances until the Jaccard term
joins them in place. The neighbour sets and the Jaccard sums are numba kernels.
:func:`re_ranking` equals torchreid's dense implementation (the test holds it to that) when
given the same base distance, except on rows of identical images, where the peers divide
rounding noise by rounding noise (NaN) and here every distance is 0.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.sparse as sp
import torch

from keyreid.evaluation.distance import as_tensor, block_distance, check_finite
from keyreid.evaluation.nearest import bf16_fast, exact_neighbours, fast_neighbours, pair_distances
from keyreid.evaluation.reid import EvaluationError

__all__ = ["re_ranking", "expanded_reciprocal_sets", "FAST_MIN_IMAGES"]

# Below this many images (query + gallery) the float32 pass takes well under a second and the
# bf16 candidates' bookkeeping would not pay.
FAST_MIN_IMAGES = 4096


def _prepare(query: np.ndarray, gallery: np.ndarray, distance: str) -> torch.Tensor:
    check_finite(query, "query features")
    check_finite(gallery, "gallery features")
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise EvaluationError(f"query {query.shape} and gallery {gallery.shape} features must be "
                              "2-D with the same dimension")
    return as_tensor(np.concatenate([query, gallery]), distance)


def _integer(value, name: str) -> int:
    """k1 / k2 as an int: ints and integral floats (20.0, as YAML or arithmetic may give them)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EvaluationError(f"re-ranking {name} must be a whole number, got {value!r}")
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise EvaluationError(f"re-ranking {name} must be a whole number, got {value!r}")
    return int(value)


def _check_arguments(k1, k2, lambda_value, chunk) -> tuple[int, int, float, int]:
    k1, k2, chunk = _integer(k1, "k1"), _integer(k2, "k2"), _integer(chunk, "chunk")
    if k1 < 1:
        raise EvaluationError(f"re-ranking k1 must be >= 1 (got k1={k1})")
    if not 1 <= k2 <= k1 + 1:
        raise EvaluationError(f"re-ranking needs 1 <= k2 <= k1 + 1 (got k1={k1}, k2={k2})")
    if isinstance(lambda_value, (bool, np.bool_)) or not isinstance(lambda_value, (int, float, np.integer, np.floating)):
        raise EvaluationError(f"re-ranking lambda must be a number in [0, 1], got {lambda_value!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise EvaluationError(f"re-ranking lambda must lie in [0, 1] (got {lambda_value})")
    if chunk < 1:
        raise EvaluationError(f"re-ranking chunk must be >= 1 (got {chunk})")
    return k1, k2, float(lambda_value), chunk


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


def expanded_reciprocal_sets(nearest: np.ndarray, k: int, k_half: int) -> tuple[np.ndarray, np.ndarray]:
    """R*(i) of every image as CSR (indptr, sorted indices), from each image's nearest images
    (nearest first, itself included). R(i, k) reads the first k + 1 columns of ``nearest`` and the
    expansion sets R(c, k_half) the first k_half + 1: :func:`re_ranking` passes k1 and
    round(k1 / 2); cluster-contrast's search returns only k1 columns, so keyreid.adapt passes k1 - 1."""
    nearest = np.ascontiguousarray(nearest, dtype=np.int64)
    if nearest.ndim != 2 or nearest.shape[1] < max(k, k_half) + 1 or min(k, k_half) < 0:
        raise ValueError(f"nearest of shape {nearest.shape} cannot give R(i, {k}) and R(i, {k_half})")
    if nearest.size and (nearest.min() < 0 or nearest.max() >= len(nearest)):
        raise ValueError("nearest holds indices outside the images (a search that found too few?)")
    return _expanded_sets(nearest, k, k_half)


@nb.njit(parallel=True, cache=True)
def _jaccard_and_base(v_indptr, v_indices, v_data, c_indptr, c_indices, c_data, num_query,
                      scale, degenerate, lambda_value, out):
    """In place: out[i, j - Q] (the base distance on entry) becomes (1 - lambda) * Jaccard
    distance between rows i < Q and j >= Q of V + lambda * out[i, j - Q] * scale[i], with the
    normalised base clipped to [0, 1] (0 for a degenerate row); V as CSR (rows) and CSC (columns)."""
    num_gallery = out.shape[1]
    for i in nb.prange(num_query):
        acc = np.zeros(num_gallery, dtype=np.float64)
        for p in range(v_indptr[i], v_indptr[i + 1]):
            k = v_indices[p]
            vi = v_data[p]
            for q in range(c_indptr[k], c_indptr[k + 1]):
                j = c_indices[q]
                if j >= num_query:
                    acc[j - num_query] += min(vi, c_data[q])
        row = out[i]
        for j in range(num_gallery):
            base = 0.0 if degenerate[i] else min(max(row[j] * scale[i], 0.0), 1.0)
            row[j] = (1.0 - lambda_value) * (1.0 - acc[j] / (2.0 - acc[j])) + lambda_value * base


def _normalised(d: np.ndarray, row_max: np.ndarray, degenerate: np.ndarray) -> np.ndarray:
    """d / the row's largest distance, in [0, 1]: the quotient of a float64 distance and a float32
    maximum can stray past 1 by rounding, and a row of identical images has only rounding noise
    to divide by (then 0: all its images are at distance zero)."""
    out = np.clip(d / np.where(degenerate, 1.0, row_max), 0.0, 1.0)
    out[degenerate] = 0.0
    return out


def re_ranking(query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3, distance: str = "cosine",
               dist_qg: np.ndarray | None = None, chunk: int = 1024,
               exact: bool | None = None) -> np.ndarray:
    """Re-ranked float32 [Q, G] distances from query and gallery features.

    ``distance`` is the base distance (cosine: 1 - cos; euclidean: squared Euclidean, as
    keyreid.evaluation.distance.distance_matrix). ``dist_qg``, when the caller already has
    that matrix, saves recomputing its query x gallery block. Defaults are the paper's
    (k1 20, k2 6, lambda 0.3). The gallery may be any candidate set (``keyreid search``).

    ``exact``: True finds every image's k1 + 1 nearest neighbours from float32 distances over
    all N^2 pairs (the reference); False from bfloat16 candidates checked against a proven error
    bound (keyreid.evaluation.nearest: the same lists, a float32 recomputation for the rows the
    bound cannot certify); None (default) takes the bf16 path where it pays (a CPU with a
    bf16 GEMM, at least FAST_MIN_IMAGES images).
    """
    query = np.asarray(query)
    gallery = np.asarray(gallery)
    k1, k2, lambda_value, chunk = _check_arguments(k1, k2, lambda_value, chunk)
    feats = _prepare(query, gallery, distance)
    num_query, n = len(query), len(feats)
    if n < k1 + 1:
        raise EvaluationError(f"re-ranking with k1={k1} needs more than {k1} images in query + gallery "
                              f"(got {n}); lower eval.rerank_k1")
    if dist_qg is not None and np.shape(dist_qg) != (num_query, n - num_query):
        raise EvaluationError(f"dist_qg has shape {np.shape(dist_qg)}, expected {(num_query, n - num_query)}")

    # The base query x gallery distances, in the output array (the Jaccard term joins them in place).
    out = np.empty((num_query, n - num_query), dtype=np.float32)
    q_feats, g_feats = feats[:num_query], feats[num_query:]
    g2 = (g_feats * g_feats).sum(1) if distance == "euclidean" else None
    for s in range(0, num_query, chunk):
        e = min(s + chunk, num_query)
        out[s:e] = (block_distance(q_feats[s:e], g_feats, distance, g2).numpy() if dist_qg is None
                    else np.asarray(dist_qg[s:e], dtype=np.float32))

    if exact is None:
        exact = not (n >= FAST_MIN_IMAGES and bf16_fast())
    if exact:
        nearest, row_max = exact_neighbours(feats, k1 + 1, distance, chunk)
    else:
        nearest, row_max, _ = fast_neighbours(feats, num_query, out, k1 + 1, distance, chunk)
    # A row whose farthest image is within float32 rounding of distance 0 holds identical images.
    sq = (feats * feats).sum(1).double().numpy()
    noise = 2 * feats.shape[1] * 2.0 ** -24 * (np.ones(n) if distance == "cosine" else sq + sq.max())
    degenerate = row_max <= noise
    k_half = int(np.around(k1 / 2.0))
    indptr, indices = _expanded_sets(nearest, k1, k_half)

    # V: exp(-normalised distance) over each R*(i), rows summing to 1.
    rows = np.repeat(np.arange(n), np.diff(indptr))
    weights = pair_distances(feats.numpy(), rows, indices, distance == "cosine")
    weights = np.exp(-_normalised(weights, row_max[rows], degenerate[rows]))
    weights /= np.bincount(rows, weights, minlength=n)[rows]  # (bincount: empty rows allowed)
    v = sp.csr_matrix((weights, indices, indptr), shape=(n, n))
    if k2 > 1:
        expand = sp.csr_matrix((np.full(n * k2, 1.0 / k2), nearest[:, :k2].ravel(),
                                np.arange(0, n * k2 + 1, k2)), shape=(n, n))
        v = (expand @ v).tocsr()
    v.sort_indices()
    vc = v.tocsc()
    vc.sort_indices()

    scale = 1.0 / np.where(degenerate[:num_query], 1.0, row_max[:num_query])
    _jaccard_and_base(v.indptr, v.indices, v.data, vc.indptr, vc.indices, vc.data, num_query,
                      scale, degenerate[:num_query], lambda_value, out)
    return out
