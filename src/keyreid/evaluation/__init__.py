"""Evaluation metrics.

* :mod:`keyreid.evaluation.reid`: CMC, mAP, mINP for re-identification (torchreid / fast-reid
  protocol), ``evaluate`` (fast, numba) and ``evaluate_reference`` (plain NumPy).
* :mod:`keyreid.evaluation.retrieval`: Recall@K, MAP@R, NMI for image retrieval
  (pytorch-metric-learning conventions).
"""

from keyreid.evaluation.reid import EvaluationError, ReidMetrics
from keyreid.evaluation.reid import evaluate as evaluate_reid
from keyreid.evaluation.retrieval import RetrievalMetrics
from keyreid.evaluation.retrieval import evaluate as evaluate_retrieval

__all__ = [
    "EvaluationError",
    "ReidMetrics",
    "RetrievalMetrics",
    "evaluate_reid",
    "evaluate_retrieval",
]
