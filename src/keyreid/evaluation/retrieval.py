"""Image-retrieval metrics (CUB-200-2011, Cars196 protocol): Recall@K, MAP@R and NMI.

Every image is a query against all *other* images.  Conventions follow
pytorch-metric-learning's AccuracyCalculator so numbers can be compared with it:

* queries whose label occurs only once ("lone" queries) have no possible match and
  are left out of Recall@K and MAP@R (PML leaves them out of precision_at_1 and
  MAP@R too); Recall@1 is then PML's precision_at_1;
* Recall@K: fraction of queries with at least one same-label image among their K
  nearest neighbours;
* MAP@R: R = number of other images with the query's label; AP over the first R
  neighbours, divided by R;
* NMI: k-means (faiss, 20 iterations, seed 1234, exactly how PML clusters) with as
  many clusters as labels, then arithmetic-mean normalised mutual information
  (scikit-learn's default).

Ties in distance are broken by image index (stable order), like the re-id protocol.
The ranks of each query's positives come from the same numba kernel as re-id
evaluation (each image gets its own "camera", which removes exactly the query itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from keyreid.evaluation import reid
from keyreid.evaluation.reid import EvaluationError

__all__ = ["RetrievalMetrics", "evaluate", "normalized_mutual_info", "DISTANCES"]

DISTANCES = ("cosine", "euclidean")
# Query rows per block of the distance matrix (bounded memory for large test sets).
_BLOCK_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class RetrievalMetrics:
    recall_at_k: dict[int, float]
    map_at_r: float
    nmi: float | None
    num_queries: int  # queries with at least one other image of their label
    num_images: int
    distance: str

    def summary(self) -> dict[str, float]:
        out = {f"R@{k}": v for k, v in self.recall_at_k.items()}
        out["MAP@R"] = self.map_at_r
        if self.nmi is not None:
            out["NMI"] = self.nmi
        return out


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """NMI with the arithmetic-mean normaliser (scikit-learn's default, same edge cases)."""
    a = np.unique(np.asarray(labels_true), return_inverse=True)[1].reshape(-1)
    b = np.unique(np.asarray(labels_pred), return_inverse=True)[1].reshape(-1)
    if len(a) != len(b):
        raise EvaluationError(f"label arrays differ in length: {len(a)} vs {len(b)}")
    ka, kb = int(a.max(initial=-1)) + 1, int(b.max(initial=-1)) + 1
    # One cluster on both sides (or nothing at all) is a perfect match by convention.
    if ka == kb and ka <= 1:
        return 1.0
    n = len(a)
    cont = np.bincount(a * kb + b, minlength=ka * kb).reshape(ka, kb).astype(np.float64)
    pa, pb = cont.sum(1) / n, cont.sum(0) / n
    nz = cont > 0
    pij = cont[nz] / n
    mi = float(np.sum(pij * (np.log(pij) - np.log(np.outer(pa, pb)[nz]))))
    if mi <= 0.0:
        return 0.0
    ha = -float(np.sum(pa[pa > 0] * np.log(pa[pa > 0])))
    hb = -float(np.sum(pb[pb > 0] * np.log(pb[pb > 0])))
    return mi / max((ha + hb) / 2.0, np.finfo(np.float64).eps)


def kmeans_labels(x: np.ndarray, n_clusters: int, *, niter: int = 20, seed: int = 1234) -> np.ndarray:
    """Cluster assignments from faiss k-means, run as PML's FaissKMeans runs it."""
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise EvaluationError("NMI needs faiss (pip install faiss-cpu)") from e
    x = np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], int(n_clusters), niter=niter, seed=seed, gpu=False)
    km.train(x)
    _, idx = km.index.search(x, 1)
    return idx[:, 0].astype(np.int64)


def _distance_block(xb, x, sq, sqb) -> np.ndarray:
    """Distances of the rows xb to all of x: negated cosine similarity, or squared L2."""
    if sq is None:  # cosine on unit vectors: rank by negated similarity (no 1 - s rounding)
        return np.ascontiguousarray(-(xb @ x.T))
    d = xb @ x.T
    d *= -2
    d += sqb[:, None]
    d += sq[None, :]
    return d


def evaluate(
    embeddings,
    labels,
    ks: Sequence[int] = (1, 2, 4, 8),
    *,
    distance: str = "cosine",
    nmi: bool = True,
    kmeans_seed: int = 1234,
) -> RetrievalMetrics:
    """Recall@K, MAP@R and NMI of `embeddings` (n, dim) with integer-like `labels` (n,).

    distance: "cosine" (default; embeddings are L2-normalised, and k-means for NMI runs
    on the normalised vectors) or "euclidean" (squared L2 on the raw embeddings, PML's
    default faiss IndexFlatL2; k-means on the raw vectors).
    """
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().cpu().numpy()
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    x = np.asarray(embeddings)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise EvaluationError(f"embeddings must be 2-D (n, dim), got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise EvaluationError(
            f"shape mismatch: {len(x)} embeddings but labels has shape {y.shape}"
        )
    if distance not in DISTANCES:
        raise EvaluationError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if len(x) == 0 or x.shape[1] == 0:
        raise EvaluationError(f"no embeddings to evaluate: shape {x.shape} (an empty test split?)")
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise EvaluationError(f"every K must be >= 1, got {ks}")
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise EvaluationError(f"embeddings have NaN or inf in {bad} of {len(x)} rows")
    n = len(x)
    if distance == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if (norms == 0).any():
            raise EvaluationError(
                f"{int((norms == 0).sum())} embeddings are all zeros; cosine is undefined"
            )
        x = x / norms
        sq = None
    else:
        sq = np.einsum("ij,ij->i", x, x)

    # Own "camera" per image: the same-pid-same-camera rule then removes only the query.
    own = np.arange(n)
    qg, qc, *shared = reid._encode(y, y, own, own, None)
    first_rank = np.zeros(n, np.int64)
    apr = np.zeros(n)
    step = max(1, _BLOCK_BYTES // (n * x.dtype.itemsize))
    for s in range(0, n, step):
        e = min(s + step, n)
        block = _distance_block(x[s:e], x, sq, None if sq is None else sq[s:e])
        fr, _, _, ar, nan_row = reid._per_query(block, qg[s:e], qc[s:e], *shared, trapezoid=False)
        if nan_row.any():  # overflow in the dot products
            raise EvaluationError(f"distances are NaN for {int(nan_row.sum())} queries")
        first_rank[s:e] = fr
        apr[s:e] = ar
    valid = first_rank > 0
    nvalid = int(valid.sum())
    if nvalid == 0:
        raise EvaluationError(
            f"no valid query: every one of the {len(np.unique(y))} labels occurs only once"
        )
    recall = {k: float(np.mean(first_rank[valid] <= k)) for k in ks}
    nmi_value = None
    if nmi:
        clusters = kmeans_labels(x, len(np.unique(y)), seed=kmeans_seed)
        nmi_value = normalized_mutual_info(y, clusters)
    return RetrievalMetrics(
        recall_at_k=recall,
        map_at_r=float(np.mean(apr[valid])),
        nmi=nmi_value,
        num_queries=nvalid,
        num_images=n,
        distance=distance,
    )
