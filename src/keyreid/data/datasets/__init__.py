"""Dataset adapters, one module each, registered by name."""

from keyreid.data.datasets.base import Dataset, build_dataset, dataset_names, register_dataset

__all__ = ["Dataset", "build_dataset", "dataset_names", "register_dataset"]
