"""Searchable galleries: features folders (`keyreid extract`), one GalleryIndex interface with a
faiss and a Qdrant engine (`keyreid index`), and `keyreid search`."""

from keyreid.search.features import FeatureSet, FeatureWriter, read_features
from keyreid.search.index import (GalleryIndex, Hit, SearchFilter, SearchIndexError, add_features, build_index,
                                  open_index)

__all__ = ["FeatureSet", "FeatureWriter", "GalleryIndex", "Hit", "SearchFilter", "SearchIndexError",
           "add_features", "build_index", "open_index", "read_features"]
