"""k-reciprocal re-ranking of a query's candidates from the index.

keyreid.evaluation.rerank.re_ranking runs on the query plus its top-N candidates' stored
vectors (not the whole gallery): the neighbour sets it needs are those among the candidates,
which is what a search can afford per query.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from keyreid.evaluation.rerank import re_ranking
from keyreid.search.index import GalleryIndex, Hit

CANDIDATES = 100


def rerank_hits(index: GalleryIndex, query: np.ndarray, hits: list[Hit], top_k: int,
                k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> list[tuple[Hit, float]]:
    """The candidates re-ordered by re-ranked distance (ascending, stable), top_k of them, each
    with that distance. Fewer than 2 candidates are returned as they are."""
    if len(hits) < 2:
        return [(h, float("nan")) for h in hits[:top_k]]
    vectors = index.get_vectors([h.id for h in hits])
    k1 = min(k1, len(hits))
    k2 = max(1, min(k2, k1 + 1))
    distance = "cosine" if index.manifest["normalized"] else "euclidean"
    d = re_ranking(np.asarray(query, np.float32).reshape(1, -1), vectors, k1=k1, k2=k2,
                   lambda_value=lambda_value, distance=distance)[0]
    order = np.argsort(d, kind="stable")[:top_k]
    return [(replace(hits[j]), float(d[j])) for j in order]


__all__ = ["CANDIDATES", "rerank_hits"]
