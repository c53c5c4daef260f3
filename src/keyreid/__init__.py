"""keyreid: keypoint-aligned embeddings for re-identification and image retrieval."""

__version__ = "0.1.0"
