"""Load one module of a peer toolkit (torchreid, fast-reid) by file path.

The peers' package __init__ files import cv2, gdown and friends that the tests do not need;
the modules the tests and benchmarks compare against (rank.py, rerank.py) need only numpy.
Shared by tests/ and bench/ (the benchmarks put this folder on sys.path).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import warnings
from pathlib import Path


def site_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    return path if path.exists() else None


def required_site_file(package: str, *parts: str) -> Path:
    """site_file, or a clear error when the peer is not installed (benchmarks)."""
    path = site_file(package, *parts)
    if path is None:
        raise RuntimeError(f"{package} is not installed (or has no {'/'.join(parts)})")
    return path


def load_by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(mod)
    return mod


def peer_module(package: str, *parts: str):
    """The module, or skip the test when the peer is not installed."""
    import pytest

    path = site_file(package, *parts)
    if path is None:
        pytest.skip(f"{package} is not installed")
    return load_by_path(f"_peer_{package}_{Path(parts[-1]).stem}", path)


def compile_fastreid_rank_cy(build: Path) -> Path:
    """Compile fast-reid's Cython evaluator (rank_cy.pyx from the installed wheel) into `build`;
    reuse the compiled module while the source is unchanged. RuntimeError when it cannot."""
    pyx = required_site_file("fastreid", "evaluation", "rank_cylib", "rank_cy.pyx")
    build.mkdir(parents=True, exist_ok=True)
    local = build / "rank_cy.pyx"
    built = list(build.glob("rank_cy*.so"))
    if built and local.exists() and local.read_bytes() == pyx.read_bytes():
        return built[0]
    shutil.copyfile(pyx, local)
    setup = (
        "import numpy as np\nfrom Cython.Build import cythonize\n"
        "from setuptools import Extension, setup\n"
        "setup(name='rank_cy', script_args=['build_ext', '--inplace'], ext_modules=cythonize("
        "[Extension('rank_cy', ['rank_cy.pyx'], include_dirs=[np.get_include()])],"
        " language_level=3, quiet=True))\n"
    )
    proc = subprocess.run([sys.executable, "-c", setup], cwd=build, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building rank_cy failed:\n{proc.stderr[-2000:]}")
    return next(build.glob("rank_cy*.so"))
