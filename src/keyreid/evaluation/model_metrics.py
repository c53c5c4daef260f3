"""A trained model on a query/gallery split: features -> distances (flip, re-ranking) -> metrics,
by the protocol of the dataset (re-ID or retrieval). Validation and `keyreid eval` share it."""

from __future__ import annotations

import numpy as np
import torch

from keyreid.config import Config
from keyreid.evaluation.distance import distance_matrix
from keyreid.evaluation.reid import evaluate
from keyreid.evaluation.rerank import re_ranking
from keyreid.inference.embed import extract_features


@torch.no_grad()
def test_distances(model: torch.nn.Module, query, gallery, transform, cfg: Config,
                   device: torch.device, show_progress: bool = False) -> np.ndarray:
    """Features -> query x gallery distance matrix (flip averaging and re-ranking per config)."""
    ec = cfg.eval
    qf = extract_features(model, query, transform, cfg.data.test_batch_size, 0, device, ec.flip,
                          show_progress=show_progress, description="query features")
    gf = extract_features(model, gallery, transform, cfg.data.test_batch_size, 0, device, ec.flip,
                          show_progress=show_progress, description="gallery features")
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


def evaluate_model(model: torch.nn.Module, query, gallery, transform, cfg: Config,
                   device: torch.device, show_progress: bool = False, protocol: str = "reid") -> dict:
    """Features -> distances -> metrics. protocol "reid": query vs gallery, CMC / mAP / mINP;
    "retrieval" (CUB, Cars196): every image of query + gallery (each image once) against all
    others, Recall@K / MAP@R / NMI. `score` is the number best checkpoints are chosen on."""
    if protocol == "retrieval":
        from keyreid.evaluation.retrieval import evaluate as retrieval_evaluate

        seen, images = set(), []
        for s in (*query, *gallery):
            if s.path not in seen:
                seen.add(s.path)
                images.append(s)
        feats = extract_features(model, images, transform, cfg.data.test_batch_size, 0, device,
                                 cfg.eval.flip, show_progress=show_progress, description="features")
        m = retrieval_evaluate(feats, np.array([s.pid for s in images]), distance=cfg.eval.distance)
        out = {f"R{k}": float(v) for k, v in m.recall_at_k.items()}
        out.update({"MAP@R": float(m.map_at_r), "NMI": float(m.nmi) if m.nmi is not None else float("nan"),
                    "score": float(m.map_at_r)})
        return out
    if protocol != "reid":
        raise ValueError(f"unknown evaluation protocol {protocol!r}; use reid or retrieval")
    distmat = test_distances(model, query, gallery, transform, cfg, device, show_progress)
    out = reid_metrics(distmat, query, gallery, cfg.eval.max_rank)
    out["score"] = out["mAP"]
    return out
