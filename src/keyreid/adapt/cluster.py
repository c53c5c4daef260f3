"""Pseudo-labels for the unlabelled target set: DBSCAN on the sparse k-reciprocal Jaccard
distances (cluster-contrast: eps 0.6, min_samples 4, k1 30, k2 6), or a clear line instead of
labels that would train on garbage.

scikit-learn's DBSCAN with metric="precomputed" on a sparse matrix counts as i's neighbours
exactly the stored entries of row i with a value <= eps; a missing entry is no neighbour and
an explicit 0 is (it sets the diagonal explicitly itself, so each image is its own neighbour).
The Jaccard matrix stores every pair with an overlap and leaves out only pairs at distance 1,
so for eps < 1 this is DBSCAN on the full matrix; eps >= 1 would make every pair neighbours
and is refused. Entries above eps change nothing, so they are not even stored.

InfoMap-style clustering (cluster-contrast's other option) needs the infomap package, which
keyreid does not depend on: only DBSCAN is implemented.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from keyreid.adapt.jaccard import (ClusteringError, check_neighbourhood, encode, nearest_neighbours, sparse_jaccard,
                                   unit_features, whole_number)

__all__ = ["Clusters", "cluster", "dbscan", "diagnose", "METHODS"]

METHODS = ("dbscan",)


@dataclass
class Clusters:
    labels: np.ndarray               # int64 [N], 0..num_clusters-1, -1 = outlier
    num_clusters: int
    num_outliers: int
    problem: str | None = None       # why these labels must not be trained on (None: fine)
    cross_camera: int | None = None  # clusters holding 2+ cameras, when cameras were given
    seconds: dict[str, float] = field(default_factory=dict)  # search, encode, jaccard, dbscan

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels[self.labels >= 0], minlength=self.num_clusters)


def dbscan(distances: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """int64 labels of scikit-learn's DBSCAN on a sparse precomputed distance matrix."""
    try:
        from sklearn.cluster import DBSCAN
    except ImportError as e:  # pragma: no cover - a test dependency of keyreid today
        raise ClusteringError("clustering the target set needs scikit-learn: pip install scikit-learn") from e
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distances)
    return labels.astype(np.int64)


def diagnose(labels: np.ndarray, eps: float, min_samples: int) -> str | None:
    """One line when the labels are degenerate (and which flag to move), else None."""
    n = len(labels)
    clustered = int((labels >= 0).sum())
    found = int(labels.max()) + 1 if clustered else 0
    setting = f"DBSCAN (eps={eps:g}, min_samples={min_samples})"
    if found == 0:
        return (f"{setting} left all {n} target images as outliers: raise --eps "
                "(or lower --min-samples)")
    if found == 1:
        # one cluster of most images: eps joins everybody; one small cluster among outliers:
        # the neighbourhoods are too tight to form more
        fix = "lower --eps" if 2 * clustered >= n else "raise --eps (or lower --min-samples)"
        return (f"{setting} put all {clustered} clustered target images in one cluster "
                f"({n - clustered} outliers): {fix}")
    return None


def _check(eps, min_samples, method) -> tuple[float, int]:
    if method not in METHODS:
        raise ClusteringError(f"unknown clustering method {method!r}: only dbscan is implemented")
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)) \
            or not 0.0 < float(eps) < 1.0:
        raise ClusteringError(f"--eps must lie strictly between 0 and 1 (a Jaccard distance), got {eps!r}")
    return float(eps), whole_number(min_samples, "--min-samples", 1)


def cluster(features, eps: float = 0.6, min_samples: int = 4, k1: int = 30, k2: int = 6,
            method: str = "dbscan", cameras=None, strict: bool = True, search: str = "auto",
            seed: int = 0) -> Clusters:
    """Cluster N target features [N, D]. ``strict`` raises ClusteringError (one line) for a
    degenerate result; otherwise it comes back with ``problem`` set. ``cameras`` [N], optional,
    only counts the clusters that span cameras (a cluster per camera means the features still
    separate cameras rather than people)."""
    eps, min_samples = _check(eps, min_samples, method)
    k1, k2 = check_neighbourhood(k1, k2)
    feats = unit_features(features)
    n = len(feats)
    if cameras is not None:
        cameras = np.asarray(cameras)
        if cameras.shape != (n,):
            raise ClusteringError(f"cameras has shape {cameras.shape}, expected ({n},): one per image")
    problem = None
    if n < min_samples:
        problem = (f"{n} target images are fewer than min_samples={min_samples}, the smallest cluster "
                   "DBSCAN can form: add target images or lower --min-samples")
    elif n < k1:
        problem = (f"{n} target images are fewer than k1={k1} neighbours that the Jaccard distance "
                   "reads: add target images or lower --k1")
    if problem:
        if strict:
            raise ClusteringError(problem)
        return Clusters(np.full(n, -1, dtype=np.int64), 0, n, problem)

    seconds: dict[str, float] = {}
    start = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal start
        now = time.perf_counter()
        seconds[name] = now - start
        start = now

    nearest = nearest_neighbours(feats, k1, search, seed=seed)
    lap("search")
    v = encode(feats, nearest, k1, k2)
    del nearest
    lap("encode")
    distances = sparse_jaccard(v, max_distance=eps)  # DBSCAN reads nothing above eps
    del v
    lap("jaccard")
    labels = dbscan(distances, eps, min_samples)
    lap("dbscan")

    clustered = labels >= 0
    found = int(labels.max()) + 1 if clustered.any() else 0
    cross = None
    if cameras is not None and found:
        pairs = np.unique(np.stack([labels[clustered], np.unique(cameras, return_inverse=True)[1][clustered]]), axis=1)
        cross = int((np.bincount(pairs[0], minlength=found) > 1).sum())
    problem = diagnose(labels, eps, min_samples)
    if problem and strict:
        raise ClusteringError(problem)
    return Clusters(labels, found, int((~clustered).sum()), problem, cross, seconds)
