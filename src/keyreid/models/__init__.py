"""Feature backbones and their pretrained weights."""

from keyreid.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    Backbone,
    ImageNetClassifier,
    available_backbones,
    build_backbone,
    imagenet_classifier,
    imagenet_preprocess,
)
from keyreid.models.pretrained import OFFLINE_SOURCES, WeightsError, offline_weights_path

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "OFFLINE_SOURCES",
    "Backbone",
    "ImageNetClassifier",
    "WeightsError",
    "available_backbones",
    "build_backbone",
    "imagenet_classifier",
    "imagenet_preprocess",
    "offline_weights_path",
]
