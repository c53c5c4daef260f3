"""Metrics of a query/gallery split from features (arrays in, numbers out; no model code here):
the distance matrix by the eval settings (distance, re-ranking), then the re-ID or retrieval
protocol. Evaluating a model on a split (features first) is keyreid.engine.evaluate."""

from __future__ import annotations

import numpy as np

from keyreid.config import EvalConfig
from keyreid.evaluation.distance import distance_matrix
from keyreid.evaluation.reid import evaluate
from keyreid.evaluation.rerank import re_ranking


def split_distances(qf: np.ndarray, gf: np.ndarray, ec: EvalConfig) -> np.ndarray:
    """query x gallery distances by the eval settings: the distance, then re-ranking when set."""
    dist_qg = distance_matrix(qf, gf, ec.distance)
    if ec.rerank:
        dist_qg = re_ranking(qf, gf, k1=ec.rerank_k1, k2=ec.rerank_k2, lambda_value=ec.rerank_lambda,
                             exact=True if ec.rerank_exact else None,
                             distance=ec.distance, dist_qg=dist_qg)
    return dist_qg


def reid_metrics(distmat: np.ndarray, query, gallery, max_rank: int = 50) -> dict:
    """R1, R5, R10, mAP, mINP and the number of valid queries of a query x gallery matrix."""
    m = evaluate(distmat, np.array([s.pid for s in query]), np.array([s.pid for s in gallery]),
                 np.array([s.camid for s in query]), np.array([s.camid for s in gallery]),
                 max_rank=min(max_rank, len(gallery)))
    cmc = m.cmc
    return {"R1": float(cmc[0]), "R5": float(cmc[min(4, len(cmc) - 1)]),
            "R10": float(cmc[min(9, len(cmc) - 1)]), "mAP": float(m.mAP), "mINP": float(m.mINP),
            "valid_queries": int(m.num_valid_queries)}


def retrieval_metrics(feats: np.ndarray, pids: np.ndarray, distance: str) -> dict:
    """Recall@K, MAP@R and NMI of every image against all others; `score` is MAP@R."""
    from keyreid.evaluation.retrieval import evaluate as retrieval_evaluate

    m = retrieval_evaluate(feats, pids, distance=distance)
    out = {f"R{k}": float(v) for k, v in m.recall_at_k.items()}
    out.update({"MAP@R": float(m.map_at_r), "NMI": float(m.nmi) if m.nmi is not None else float("nan"),
                "score": float(m.map_at_r)})
    return out
