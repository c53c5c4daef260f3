"""Load one module of a peer toolkit (torchreid, fast-reid) by file path.

The peers' package __init__ files import cv2, gdown and friends that the tests do not need;
the modules the tests compare against (rank.py, rerank.py) need only numpy.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest


def site_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    return path if path.exists() else None


def load_by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(mod)
    return mod


def peer_module(package: str, *parts: str):
    """The module, or skip the test when the peer is not installed."""
    path = site_file(package, *parts)
    if path is None:
        pytest.skip(f"{package} is not installed")
    return load_by_path(f"_peer_{package}_{Path(parts[-1]).stem}", path)
