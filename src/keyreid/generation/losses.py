"""Losses shared by the generation methods.

GANLoss takes raw discriminator outputs (logits for "bce", scores for "lsgan") and a target that is
real or fake. Label smoothing follows FD-GAN: each target element is drawn uniformly from a range,
(0.7, 1.0) for real and (0.0, 0.3) for fake; (1, 1) / (0, 0) is no smoothing. The draws use torch's
global generator, which the trainer seeds and checkpoints, so a resumed run draws the same labels.

Every loss is computed in float32, also under bf16/fp16 autocast, so small differences between
real and fake scores are not lost to rounding.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GAN_KINDS = ("bce", "lsgan")


def _label_range(value, name: str) -> tuple[float, float]:
    lo, hi = (float(value), float(value)) if isinstance(value, (int, float)) else map(float, value)
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi <= 1, got {value!r}")
    return lo, hi


class GANLoss(nn.Module):
    """kind "bce": sigmoid + binary cross-entropy on logits (FD-GAN); "lsgan": mean squared error
    of the scores to the labels (PN-GAN's code, CycleGAN)."""

    def __init__(self, kind: str = "lsgan", real_label=(1.0, 1.0), fake_label=(0.0, 0.0)):
        super().__init__()
        if kind not in GAN_KINDS:
            raise ValueError(f"unknown GAN loss {kind!r}; known: {', '.join(GAN_KINDS)}")
        self.kind = kind
        self.real_label = _label_range(real_label, "real_label")
        self.fake_label = _label_range(fake_label, "fake_label")

    def targets(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        lo, hi = self.real_label if target_is_real else self.fake_label
        if lo == hi:
            return torch.full(prediction.shape, lo, dtype=torch.float32, device=prediction.device)
        u = torch.rand(prediction.shape, dtype=torch.float32, device=prediction.device)
        return lo + (hi - lo) * u

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        pred = prediction.float()
        target = self.targets(pred, target_is_real)
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(pred, target)
        return F.mse_loss(pred, target)


def discriminator_loss(gan: GANLoss, real_pred: Tensor, fake_pred: Tensor) -> Tensor:
    """0.5 * (loss on real + loss on fake): halves D's step relative to G's (pix2pix, FD-GAN)."""
    return 0.5 * (gan(real_pred, True) + gan(fake_pred, False))


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent dimensions, mean over the batch:
    0.5 * sum(mu^2 + exp(logvar) - logvar - 1)."""
    mu, logvar = mu.float(), logvar.float()
    per_element = mu.pow(2) + logvar.exp() - logvar - 1.0
    return 0.5 * per_element.flatten(1).sum(dim=1).mean()


def feature_matching(a: Tensor | Sequence[Tensor], b: Tensor | Sequence[Tensor]) -> Tensor:
    """0.5 * mean over the batch of ||a - b||^2 (summed over all features of a sample). Lists of
    tensors (a discriminator's intermediate features) add up layer by layer. Detach the side that
    is a target; this function does not choose for the caller."""
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b) or not a:
            raise ValueError("feature_matching needs two non-empty lists of the same length")
        return sum(feature_matching(x, y) for x, y in zip(a, b))
    if a.shape != b.shape:
        raise ValueError(f"feature_matching: shapes differ, {list(a.shape)} vs {list(b.shape)}")
    diff = a.float() - b.float()
    return 0.5 * diff.pow(2).flatten(1).sum(dim=1).mean()


def safe_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x over the elements selected by mask; 0 when nothing is selected, still attached to
    x's graph (a plain masked mean is NaN on an empty mask, as in FD-GAN's positive-pair L1).

    mask is bool and broadcasts from the left: a [B] mask on x [B, C, H, W] selects whole samples.
    """
    mask = mask.to(device=x.device, dtype=torch.bool)
    if mask.dim() > x.dim() or mask.shape != x.shape[: mask.dim()]:
        raise ValueError(f"safe_mean: mask {list(mask.shape)} does not lead x {list(x.shape)}")
    mask = mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim())).expand_as(x)
    x = x.float()
    selected = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return selected.sum() / mask.sum().clamp_min(1).to(x.dtype)
