"""Data layer: records, dataset adapters, keypoints, transforms, samplers, synthetic data."""

from keyreid.data.records import Sample

__all__ = ["Sample"]
