"""Classification losses: label-smoothed cross-entropy and normalized softmax."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from keyreid.losses._pairs import upcast
from keyreid.losses.registry import register_loss


@register_loss("cross_entropy")
class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy with label smoothing (BoT: epsilon = 0.1).

    Target distribution is (1 - eps) * one_hot + eps / C, the same convention as
    F.cross_entropy(label_smoothing=eps).
    """

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(upcast(logits), dim=1)
        nll = -log_p.gather(1, labels.long().unsqueeze(1)).squeeze(1)
        uniform = -log_p.mean(dim=1)
        return ((1.0 - self.epsilon) * nll + self.epsilon * uniform).mean()

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"


@register_loss("normalized_softmax")
class NormalizedSoftmaxLoss(nn.Module):
    """Normalized softmax (Zhai and Wu, BMVC 2019).

    Embeddings and class weights are L2-normalised, logits are cosines / temperature.
    The module owns the class weights: give its parameters to the optimizer.
    """

    def __init__(self, num_classes: int, embedding_dim: int, temperature: float = 0.05):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        # Only directions matter after normalisation; any isotropic init will do.
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(embedding_dim))

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = F.normalize(upcast(embeddings), dim=1)
        w = F.normalize(self.weight.to(x.dtype), dim=1)
        return F.linear(x, w) / self.temperature

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings), labels.long())

    def extra_repr(self) -> str:
        c, d = self.weight.shape
        return f"num_classes={c}, embedding_dim={d}, temperature={self.temperature}"
