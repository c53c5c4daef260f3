"""Multi-similarity loss (Wang et al., CVPR 2019), delegated to pytorch-metric-learning."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from keyreid.losses._pairs import check_batch, upcast
from keyreid.losses.registry import register_loss


@register_loss("multi_similarity")
class MultiSimilarityLoss(nn.Module):
    """PML's MultiSimilarityLoss on cosine similarity, optionally with its MS miner.

    alpha, beta, base are the paper's alpha, beta, lambda; miner_epsilon is the paper's
    pair-mining epsilon (None: no mining, every pair weighted).
    """

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                 miner_epsilon: Optional[float] = 0.1):
        super().__init__()
        try:
            from pytorch_metric_learning import losses, miners
        except ImportError as e:  # optional dependency: only this loss needs it
            raise ImportError("multi_similarity needs pytorch-metric-learning: "
                              "pip install pytorch-metric-learning") from e
        self.loss = losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
        self.miner = None if miner_epsilon is None else miners.MultiSimilarityMiner(
            epsilon=miner_epsilon)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_batch(embeddings, labels)
        x = upcast(embeddings)
        pairs = None if self.miner is None else self.miner(x, labels)
        return self.loss(x, labels, pairs)
