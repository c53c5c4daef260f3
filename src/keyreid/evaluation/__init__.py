"""Evaluation metrics: re-id ranking (CMC, mAP, mINP) and retrieval (Recall@K, MAP@R, NMI)."""
