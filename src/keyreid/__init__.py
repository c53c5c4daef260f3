"""keyreid: keypoint-aligned embeddings for re-identification and image retrieval."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `keyreid.load_model(ckpt)` without importing torch for `import keyreid` alone
    if name in ("load_model", "LoadedModel"):
        from keyreid import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'keyreid' has no attribute {name!r}")
