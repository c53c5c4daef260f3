"""Camera-aware proxies (CAP: Wang et al., "Camera-aware Proxies for Unsupervised Person
Re-Identification", AAAI 2021): a cluster seen by several cameras gets one proxy per camera, so
that the memory does not have to pull a camera's look and a person's into one centroid.

For a feature f of pseudo-identity y seen by camera c, with proxies p (unit vectors), their
cluster y(p) and camera c(p), and s(p) = f . p / temperature:

    intra = -log softmax over {p : c(p) = c} of s, at p(y, c)          (own proxy among its camera's)
    inter = -1/|P| sum_{p in P} log( exp s(p) / (sum_{u in P} exp s(u) + sum_{q in Q} exp s(q)) )
            P = {p : y(p) = y} (all cameras), Q = the `hard_negatives` most similar proxies of
            other clusters
    loss  = intra + inter_weight * inter

CAP's values: temperature 0.07, inter_weight 0.5, 50 hard negatives. Each proxy in the batch is
updated with momentum toward the mean of its batch instances (CAP updates instance by instance).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keyreid.adapt.jaccard import ClusteringError

__all__ = ["CameraProxyMemory"]


class CameraProxyMemory(nn.Module):
    proxies: torch.Tensor
    proxy_cluster: torch.Tensor
    proxy_camera: torch.Tensor
    cameras: torch.Tensor
    lookup: torch.Tensor

    def __init__(self, num_features: int, proxy_cluster, proxy_camera, cameras, temperature: float = 0.07,
                 momentum: float = 0.2, inter_weight: float = 0.5, hard_negatives: int = 50):
        """proxy_cluster / proxy_camera [P]: each proxy's cluster (0..K-1) and camera index
        (0..C-1, into `cameras`, the sorted raw camera ids)."""
        super().__init__()
        proxy_cluster = torch.as_tensor(proxy_cluster, dtype=torch.long)
        proxy_camera = torch.as_tensor(proxy_camera, dtype=torch.long)
        cameras = torch.as_tensor(cameras, dtype=torch.long)
        if num_features < 1 or not len(proxy_cluster) or proxy_cluster.shape != proxy_camera.shape:
            raise ClusteringError("a camera-aware memory needs >= 1 proxy with a cluster and a camera each")
        if not temperature > 0 or not 0.0 <= momentum <= 1.0 or inter_weight < 0 or hard_negatives < 1:
            raise ClusteringError(f"camera proxies: temperature {temperature} > 0, momentum {momentum} in [0, 1], "
                                  f"inter_weight {inter_weight} >= 0 and hard_negatives {hard_negatives} >= 1 needed")
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.inter_weight, self.hard_negatives = float(inter_weight), int(hard_negatives)
        num_clusters = int(proxy_cluster.max()) + 1
        lookup = torch.full((num_clusters, len(cameras)), -1, dtype=torch.long)
        lookup[proxy_cluster, proxy_camera] = torch.arange(len(proxy_cluster))
        self.register_buffer("proxies", torch.zeros(len(proxy_cluster), num_features))
        self.register_buffer("proxy_cluster", proxy_cluster)
        self.register_buffer("proxy_camera", proxy_camera)
        self.register_buffer("cameras", cameras)
        self.register_buffer("lookup", lookup)

    @classmethod
    def from_clusters(cls, features: torch.Tensor, labels, cameras, **options) -> CameraProxyMemory:
        """One proxy per (cluster, camera) pair among the clustered images (labels -1 left out),
        initialised to the normalised mean of its images' normalised features."""
        labels, cameras = np.asarray(labels), np.asarray(cameras)
        keep = labels >= 0
        if not keep.any():
            raise ClusteringError("no clustered image to make camera proxies of")
        raw = np.unique(cameras[keep])
        cam_index = np.searchsorted(raw, cameras[keep])
        pairs, inverse = np.unique(np.stack([labels[keep], cam_index]), axis=1, return_inverse=True)
        memory = cls(features.shape[1], pairs[0], pairs[1], raw, **options)
        x = F.normalize(features[torch.from_numpy(np.flatnonzero(keep))].float(), dim=1)
        index = torch.from_numpy(inverse.reshape(-1)).long()
        sums = torch.zeros_like(memory.proxies).index_add_(0, index, x)
        memory.proxies = F.normalize(sums / torch.bincount(index, minlength=len(sums))[:, None], dim=1)
        return memory

    def proxy_of(self, targets: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """The proxy index of each (pseudo-label, raw camera id) pair; an error for a pair the
        memory has no proxy for."""
        cam = torch.searchsorted(self.cameras, cameras.to(self.cameras.device).long())
        cam = cam.clamp(max=len(self.cameras) - 1)
        targets = targets.to(self.lookup.device).long()
        known = (self.cameras[cam] == cameras.to(self.cameras.device)) & (targets >= 0) & \
            (targets < len(self.lookup))
        proxy = torch.where(known, self.lookup[targets.clamp(0, len(self.lookup) - 1), cam], -1)
        if (proxy < 0).any():
            raise ClusteringError("a (pseudo-label, camera) pair has no camera proxy: the labels are not the "
                                  "memory's")
        return proxy

    def forward(self, features: torch.Tensor, targets: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        proxy = self.proxy_of(targets, cameras)
        with torch.autocast(features.device.type, enabled=False):
            x = F.normalize(features.to(self.proxies.dtype), dim=1)
            sims = x @ self.proxies.T / self.temperature                     # [B, P]
            own_cluster = self.proxy_cluster[proxy]
            same_camera = self.proxy_camera[None, :] == self.proxy_camera[proxy][:, None]
            intra = F.cross_entropy(sims.masked_fill(~same_camera, float("-inf")), proxy)
            positive = self.proxy_cluster[None, :] == own_cluster[:, None]
            k = min(self.hard_negatives, int((~positive).sum(1).min()))
            if k > 0:
                negatives = sims.masked_fill(positive, float("-inf")).topk(k, dim=1).values
            else:
                negatives = sims.new_zeros(len(sims), 0)
            pos = sims.masked_fill(~positive, float("-inf"))
            denominator = torch.logsumexp(torch.cat([pos, negatives], 1), dim=1, keepdim=True)
            log_ratio = (sims - denominator).masked_fill(~positive, 0.0)
            inter = -(log_ratio.sum(1) / positive.sum(1)).mean()
            loss = intra + self.inter_weight * inter
        if self.training:
            self._momentum_update(x.detach(), proxy)
        return loss

    @torch.no_grad()
    def _momentum_update(self, x: torch.Tensor, proxy: torch.Tensor) -> None:
        chosen, inverse, counts = torch.unique(proxy, return_inverse=True, return_counts=True)
        means = x.new_zeros(len(chosen), x.shape[1]).index_add_(0, inverse, x) / counts[:, None]
        rows = F.normalize(self.momentum * self.proxies[chosen] + (1 - self.momentum) * means, dim=1)
        self.proxies = self.proxies.index_copy(0, chosen, rows)   # out of place: backward saved the old
