"""Losses, one module per family, buildable by name through a small registry."""

from keyreid.losses.registry import build_loss, loss_names, register_loss
from keyreid.losses.classification import CrossEntropyLabelSmooth, NormalizedSoftmaxLoss
from keyreid.losses.triplet import BatchHardTripletLoss, EasyPositiveHardNegativeLoss
from keyreid.losses.center import CenterLoss
from keyreid.losses.multi_similarity import MultiSimilarityLoss
from keyreid.losses.heatmap import HeatmapMSELoss

__all__ = [
    "BatchHardTripletLoss",
    "CenterLoss",
    "CrossEntropyLabelSmooth",
    "EasyPositiveHardNegativeLoss",
    "HeatmapMSELoss",
    "MultiSimilarityLoss",
    "NormalizedSoftmaxLoss",
    "build_loss",
    "loss_names",
    "register_loss",
]
