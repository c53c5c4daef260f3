"""The cluster memory of cluster-contrast (Dai et al. 2021): one L2-normalised centroid per
pseudo-label cluster, an InfoNCE loss of each (normalised) feature against all centroids, and a
momentum update of the batch's clusters instead of gradients.

    loss = mean_i -log softmax_k(f_i . c_k / temperature)[y_i]
    c_y <- normalise(momentum * c_y + (1 - momentum) * x_y)

with momentum weighing the old centroid (cluster-contrast's convention: 0.2 keeps a fifth of it)
and x_y the batch's hardest instance of cluster y, the least similar to c_y ("hard", the
paper's), or the mean of the batch's instances of y ("mean"; cluster-contrast's non-hard code
instead applies the instances one after another). The camera-aware proxy variant (CAP) is
adapt/camera_memory.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from keyreid.adapt.jaccard import ClusteringError

__all__ = ["ClusterMemory", "UPDATES"]

UPDATES = ("hard", "mean")


class ClusterMemory(nn.Module):
    """Centroids are a buffer (saved with the state dict, never trained): the loss's gradient
    reaches the features only. The update happens in :meth:`forward` while training, after the
    logits, which keep the centroids as they were (backward sees the pre-update ones)."""

    centroids: torch.Tensor

    def __init__(self, num_features: int, num_clusters: int, temperature: float = 0.05,
                 momentum: float = 0.2, update: str = "hard"):
        super().__init__()
        if num_features < 1 or num_clusters < 1:
            raise ClusteringError(f"a cluster memory needs >= 1 feature and cluster, got {num_features}, "
                                  f"{num_clusters}")
        if not temperature > 0:
            raise ClusteringError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise ClusteringError(f"momentum must lie in [0, 1], got {momentum}")
        if update not in UPDATES:
            raise ClusteringError(f"unknown memory update {update!r}; use hard or mean")
        self.temperature, self.momentum, self.update = float(temperature), float(momentum), update
        self.register_buffer("centroids", torch.zeros(num_clusters, num_features))

    @classmethod
    def from_clusters(cls, features: torch.Tensor, labels: torch.Tensor, **options) -> ClusterMemory:
        """A memory whose centroids are the clusters' mean features (outliers, -1, left out)."""
        labels = torch.as_tensor(labels)
        memory = cls(features.shape[1], int(labels.max()) + 1 if (labels >= 0).any() else 0, **options)
        memory.initialise(features, labels)
        return memory

    @torch.no_grad()
    def initialise(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Centroid k = normalise(mean of the normalised features labelled k)."""
        labels = torch.as_tensor(labels, device=features.device).long()
        if features.ndim != 2 or labels.shape != (len(features),):
            raise ClusteringError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} "
                                  "do not match")
        keep = labels >= 0
        counts = torch.bincount(labels[keep], minlength=len(self.centroids))
        if len(counts) != len(self.centroids) or (counts == 0).any():
            raise ClusteringError(f"labels must name every cluster 0..{len(self.centroids) - 1} at least once")
        x = F.normalize(features[keep].to(self.centroids), dim=1)
        sums = torch.zeros_like(self.centroids).index_add_(0, labels[keep].to(x.device), x)
        self.centroids = F.normalize(sums / counts.to(x.device)[:, None], dim=1)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean InfoNCE loss of features [B, D] (any scale) with pseudo-labels targets [B]."""
        targets = targets.long()
        if targets.numel() and (targets.min() < 0 or targets.max() >= len(self.centroids)):
            raise ClusteringError(f"targets must lie in 0..{len(self.centroids) - 1} (outliers dropped)")
        # in the centroids' dtype, float32 under autocast too: logits / 0.05 are large
        with torch.autocast(features.device.type, enabled=False):
            x = F.normalize(features.to(self.centroids.dtype), dim=1)
            logits = x @ self.centroids.T
            loss = F.cross_entropy(logits / self.temperature, targets)
        if self.training:
            self._momentum_update(x.detach(), targets, logits.detach())
        return loss

    @torch.no_grad()
    def _momentum_update(self, x: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor) -> None:
        classes, inverse, counts = torch.unique(targets, return_inverse=True, return_counts=True)
        if self.update == "hard":
            own = logits.gather(1, targets[:, None]).squeeze(1)  # similarity to its own centroid
            order = torch.argsort(own, stable=True)                            # least similar first,
            order = order[torch.argsort(inverse[order], stable=True)]          # grouped by class
            chosen = x[order[torch.cumsum(counts, 0) - counts]]
        else:
            chosen = x.new_zeros(len(classes), x.shape[1]).index_add_(0, inverse, x)
            chosen = chosen / counts[:, None]
        rows = F.normalize(self.momentum * self.centroids[classes] + (1 - self.momentum) * chosen, dim=1)
        # out of place: autograd saved the old tensor for the logits' backward
        self.centroids = self.centroids.index_copy(0, classes, rows)
