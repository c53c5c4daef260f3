"""k-reciprocal Jaccard distances among N unlabelled images, sparse, for pseudo-label clustering.

The definition is cluster-contrast's ``compute_jaccard_distance`` (Dai et al. 2021, after Zhong
et al. 2017), on L2-normalised features:

1. each image's k1 nearest images, itself included (cluster-contrast's faiss search asks for k1);
2. R(i) = j among i's k1 nearest with i among j's k1 nearest; R*(i) = R(i) expanded by
   R(c, round(k1 / 2)) (read from the first round(k1 / 2) + 1 columns) of each c in R(i) sharing
   more than 2/3 of its members with R(i);
3. V[i, j] = softmax over j in R*(i) of -(2 - 2 cos(i, j)), then (k2 > 1) the mean of V over
   i's k2 nearest images;
4. distance 1 - s / (2 - s), s = sum_k min(V[i, k], V[j, k]), clipped at 0.

Where it differs from :func:`keyreid.evaluation.rerank.re_ranking` (same machinery, Zhong's
definition): re_ranking reads k1 + 1 neighbours, weighs V by exp(-d / the row's largest
distance) instead of a softmax of the squared Euclidean distance, and adds the base distance
(lambda); here lambda is 0 and the matrix is one set against itself.

Only pairs with a non-zero overlap s have a distance below 1 and are stored (as ``max_distance``
allows), the diagonal always, as an explicit 0; every other pair is at distance 1. Neither V nor
the result is ever dense: V has a few hundred entries per row, the Jaccard sums are a numba
kernel over V's rows and columns.

Neighbour search (``search``): "exact" is keyreid's float32 search over all pairs (torch GEMM);
"cells" partitions the images by spherical k-means into cells of about ``cell_size`` and
searches each cell's images among the ``probes`` cells nearest to it (torch GEMM, approximate:
bench/adapt_clustering.py reports the recall and the clusters against "exact"); "faiss" is
cluster-contrast's CPU path (IndexFlat, exact), kept for comparison: faiss-cpu's flat search
measured 4x slower than the torch GEMM on this repo's 2-core machine, its IVF / HNSW indexes
slower still, so no faiss index is the default. "auto" is exact up to EXACT_MAX_IMAGES images.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.sparse as sp
import torch

from keyreid.errors import KeyreidError
from keyreid.evaluation.distance import check_finite
from keyreid.evaluation.nearest import exact_neighbours, pair_distances
from keyreid.evaluation.rerank import expanded_reciprocal_sets

__all__ = ["ClusteringError", "jaccard_distance", "nearest_neighbours", "encode", "sparse_jaccard",
           "unit_features", "check_neighbourhood", "whole_number", "EXACT_MAX_IMAGES"]

# The exact search is quadratic: about 20 s at 20k images on 2 cores, minutes at 100k.
EXACT_MAX_IMAGES = 20_000
# "cells": about 256 images a cell, each searched among its 64 nearest cells (a quarter of the
# images at 64k, 16% at 100k): labels 0.99 ARI of the exact search's at 30k (bench/adapt_clustering.py).
CELL_SIZE, PROBES = 256, 64
SEARCHES = ("auto", "exact", "cells", "faiss")


class ClusteringError(KeyreidError):
    """Pseudo-labels that cannot be made or would be garbage; one line saying what to change."""


def unit_features(features) -> torch.Tensor:
    """float32 [N, D] L2-normalised features from an array or tensor; one line for a bad one."""
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim != 2 or len(x) == 0:
        raise ClusteringError(f"target features must be a non-empty 2-D array, got shape {x.shape}")
    check_finite(x, "target features")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return torch.nn.functional.normalize(t, dim=1)


def _kmeans(feats: torch.Tensor, cells: int, iters: int, seed: int, chunk: int) -> torch.Tensor:
    """Spherical k-means centroids (unit rows), started from a seeded sample of the images."""
    gen = torch.Generator().manual_seed(seed)
    centroids = feats[torch.randperm(len(feats), generator=gen)[:cells]].clone()
    for _ in range(iters):
        assign = _assign(feats, centroids, chunk)
        sums = torch.zeros_like(centroids).index_add_(0, assign, feats)
        filled = torch.bincount(assign, minlength=cells) > 0  # an emptied cell keeps its centroid
        centroids[filled] = torch.nn.functional.normalize(sums[filled], dim=1)
    return centroids


def _assign(feats: torch.Tensor, centroids: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([(feats[s:s + chunk * 8] @ centroids.T).argmax(1) for s in range(0, len(feats), chunk * 8)])


def _cell_neighbours(feats: torch.Tensor, k: int, cell_size: int, probes: int, chunk: int,
                     seed: int) -> np.ndarray:
    n = len(feats)
    cells = max(1, n // cell_size)
    if probes >= cells:  # every cell probed: the exact search is the same work
        return exact_neighbours(feats, k, "cosine", chunk)[0]
    centroids = _kmeans(feats, cells, 10, seed, chunk)
    assign = _assign(feats, centroids, chunk)
    probe = torch.topk(centroids @ centroids.T, probes, dim=1).indices  # its own cell first
    order = torch.argsort(assign, stable=True)
    ends = torch.cumsum(torch.bincount(assign, minlength=cells), 0).tolist()
    members = [order[s:e] for s, e in zip([0] + ends[:-1], ends)]
    nearest = np.empty((n, k), dtype=np.int64)
    for c in range(cells):
        if not len(members[c]):
            continue
        cand = torch.cat([members[p] for p in probe[c].tolist()])
        if len(cand) < k:  # a sparse corner of the space: search everything
            cand = torch.arange(n)
        cand_feats = feats[cand]
        for s in range(0, len(members[c]), chunk):
            q = members[c][s:s + chunk]
            top = torch.topk(feats[q] @ cand_feats.T, k, dim=1).indices
            nearest[q.numpy()] = cand[top].numpy()
    return nearest


def nearest_neighbours(feats: torch.Tensor, k: int, search: str = "auto", cell_size: int = CELL_SIZE,
                       probes: int = PROBES, chunk: int = 1024, seed: int = 0) -> np.ndarray:
    """[N, k] int64: each image's k nearest images by cosine (unit rows), nearest first."""
    if search not in SEARCHES:
        raise ClusteringError(f"unknown neighbour search {search!r}; use one of {', '.join(SEARCHES)}")
    if search == "auto":
        search = "exact" if len(feats) <= EXACT_MAX_IMAGES else "cells"
    if search == "exact":
        return exact_neighbours(feats, k, "cosine", chunk)[0]
    if search == "cells":
        return _cell_neighbours(feats, k, cell_size, probes, chunk, seed)
    import faiss  # only this comparison path needs it

    index = faiss.IndexFlatIP(feats.shape[1])
    index.add(feats.numpy())
    return index.search(feats.numpy(), k)[1].astype(np.int64)


def encode(feats: torch.Tensor, nearest: np.ndarray, k1: int, k2: int) -> sp.csr_matrix:
    """V (steps 2-3): sparse [N, N], rows summing to 1, from the k1 nearest of each image."""
    n = len(feats)
    indptr, indices = expanded_reciprocal_sets(nearest, k1 - 1, int(np.around(k1 / 2.0)))
    rows = np.repeat(np.arange(n), np.diff(indptr))
    # pair_distances gives 1 - cos in float64; cluster-contrast's softmax is over -(2 - 2 cos)
    weights = np.exp(-2.0 * pair_distances(feats.numpy(), rows, indices, True))
    weights /= np.bincount(rows, weights, minlength=n)[rows]
    v = sp.csr_matrix((weights, indices, indptr), shape=(n, n))
    if k2 > 1:
        expand = sp.csr_matrix((np.full(n * k2, 1.0 / k2), nearest[:, :k2].ravel(),
                                np.arange(0, n * k2 + 1, k2)), shape=(n, n))
        v = (expand @ v).tocsr()
    return v


@nb.njit(parallel=True, cache=True)
def _jaccard_rows(v_indptr, v_indices, v_data, c_indptr, c_indices, c_data, max_distance, block,
                  out_indptr, out_indices, out_data, fill):
    """Per row i, the Jaccard distance to every j sharing a column with it (sorted j, the diagonal
    forced to 0), those <= max_distance: counted into out_indptr[i + 1] (fill False) or written at
    out_indptr[i] (fill True). A dense accumulator per block of rows, reset through the touched list."""
    n = len(v_indptr) - 1
    for b in nb.prange((n + block - 1) // block):
        acc = np.zeros(n, dtype=np.float64)
        seen = np.zeros(n, dtype=np.bool_)
        touched = np.empty(n, dtype=np.int64)
        for i in range(b * block, min(n, (b + 1) * block)):
            m = 0
            for p in range(v_indptr[i], v_indptr[i + 1]):
                k = v_indices[p]
                vi = v_data[p]
                for q in range(c_indptr[k], c_indptr[k + 1]):
                    j = c_indices[q]
                    if not seen[j]:
                        seen[j] = True
                        touched[m] = j
                        m += 1
                    acc[j] += min(vi, c_data[q])
            cols = np.sort(touched[:m])
            pos = out_indptr[i] if fill else 0
            for j in cols:
                s = acc[j]
                d = 0.0 if j == i else max(1.0 - s / (2.0 - s), 0.0)
                if d <= max_distance:
                    if fill:
                        out_indices[pos] = j
                        out_data[pos] = d
                    pos += 1
                acc[j] = 0.0
                seen[j] = False
            if not fill:
                out_indptr[i + 1] = pos


def sparse_jaccard(v: sp.csr_matrix, max_distance: float = 1.0, block: int = 256) -> sp.csr_matrix:
    """Step 4 on V: float32 CSR [N, N] of the pairs with overlap (distance <= max_distance),
    sorted columns, explicit zeros kept (the diagonal, identical rows: DBSCAN's nearest pairs)."""
    v = v.tocsr()
    vc = v.tocsc()
    n = v.shape[0]
    indptr = np.zeros(n + 1, dtype=np.int64)
    empty_i, empty_d = np.empty(0, np.int64), np.empty(0, np.float32)
    args = (v.indptr, v.indices, v.data, vc.indptr, vc.indices, vc.data, float(max_distance), block)
    _jaccard_rows(*args, indptr, empty_i, empty_d, False)
    np.cumsum(indptr, out=indptr)
    index_dtype = np.int32 if indptr[-1] < np.iinfo(np.int32).max else np.int64
    indices = np.empty(indptr[-1], dtype=index_dtype)
    data = np.empty(indptr[-1], dtype=np.float32)
    _jaccard_rows(*args, indptr, indices, data, True)
    # built from its arrays: scipy keeps the explicit zeros that any arithmetic might drop
    return sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=(n, n))


def whole_number(value, name: str, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ClusteringError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


def check_neighbourhood(k1, k2) -> tuple[int, int]:
    k1, k2 = whole_number(k1, "--k1", 1), whole_number(k2, "--k2", 1)
    if k2 > k1:  # V's query expansion reads k2 of the k1 neighbours found
        raise ClusteringError(f"--k2 must be <= --k1 (got k1={k1}, k2={k2}): lower --k2")
    return k1, k2


def jaccard_distance(features, k1: int = 30, k2: int = 6, max_distance: float = 1.0,
                     search: str = "auto", cell_size: int = CELL_SIZE, probes: int = PROBES,
                     chunk: int = 1024, seed: int = 0) -> sp.csr_matrix:
    """Sparse float32 CSR [N, N] of k-reciprocal Jaccard distances (the module's definition);
    a pair not stored is at distance 1 (or above max_distance). Features [N, D], any scale."""
    k1, k2 = check_neighbourhood(k1, k2)
    if not 0.0 <= float(max_distance) <= 1.0:
        raise ClusteringError(f"max_distance must lie in [0, 1], got {max_distance}")
    feats = unit_features(features)
    if len(feats) < k1:
        raise ClusteringError(f"{len(feats)} target images are fewer than k1={k1} neighbours that the "
                              "Jaccard distance reads: add target images or lower --k1")
    nearest = nearest_neighbours(feats, k1, search, cell_size, probes, chunk, seed)
    return sparse_jaccard(encode(feats, nearest, k1, k2), max_distance)
