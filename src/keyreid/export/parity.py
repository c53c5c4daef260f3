"""Which images the export checks parity on, and the check itself.

Exports that agree at one batch size and not at another are a known failure of re-ID exports
(a batch dimension baked into a reshape), so the ONNX graph is run at batch 1 image by image and
at batch N on the same images, and both are compared with the torch model's embeddings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from keyreid.data.datasets.base import IMAGE_EXTENSIONS
from keyreid.errors import KeyreidError

PARITY_IMAGES = 8       # enough to catch batch-dependent bugs, cheap on a ResNet-50
TOLERANCE = 1e-4        # max abs difference of L2-normalised embeddings


@dataclass
class ParityImages:
    images: list            # paths or uint8 arrays
    source: str             # the folder they came from, or "generated"


def _first_images(folder: Path, limit: int) -> list[Path]:
    """The first `limit` image files under `folder` in sorted walk order (stops early, so a large
    dataset root costs a few directory listings)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        if len(found) >= limit:
            break
    return found[:limit]


def generated_images(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Deterministic smooth colour images (blurred noise: closer to photographs than white noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR)))
    return out


def choose_images(images_dir: Optional[Path], data_root: Optional[str], input_hw: tuple[int, int],
                  limit: int = PARITY_IMAGES) -> ParityImages:
    """--images DIR when given (an error when it has no image), else the images of the dataset
    the model was trained on when its root is here, else generated ones."""
    if images_dir is not None:
        if not Path(images_dir).is_dir():
            raise KeyreidError(f"{images_dir}: --images is not a folder")
        found = _first_images(Path(images_dir), limit)
        if not found:
            raise KeyreidError(f"{images_dir}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it")
        return ParityImages(found, str(images_dir))
    if data_root and Path(data_root).is_dir():
        found = _first_images(Path(data_root), limit)
        if found:
            return ParityImages(found, str(data_root))
    return ParityImages(generated_images(limit, *input_hw), "generated")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_parity(reference: np.ndarray, run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                 batch: np.ndarray, tolerance: float = TOLERANCE) -> dict:
    """Compare `run` (ONNX: batch -> (embedding, raw_embedding)) with `reference` (torch
    embeddings of the same batch) at batch 1 and at batch N; returns the max abs differences of
    L2-normalised embeddings by batch size and raises KeyreidError when one exceeds tolerance."""
    ref = _unit(reference.astype(np.float64))
    n = len(batch)
    singles = [run(batch[i:i + 1]) for i in range(n)]
    results = {1: (np.concatenate([s[0] for s in singles]), np.concatenate([s[1] for s in singles])),
               n: run(batch)}
    diffs = {}
    for size, (emb, raw) in results.items():
        if emb.shape != reference.shape or raw.shape != reference.shape:
            raise KeyreidError(f"ONNX output at batch {size} has shape {emb.shape}, torch gives "
                               f"{reference.shape}")
        diffs[size] = float(max(np.abs(_unit(emb.astype(np.float64)) - ref).max(),
                                np.abs(_unit(raw.astype(np.float64)) - ref).max()))
    bad = {k: v for k, v in diffs.items() if not v <= tolerance}  # NaN fails too
    if bad:
        worst = max(bad, key=lambda k: bad[k] if np.isfinite(bad[k]) else np.inf)
        raise KeyreidError(f"onnxruntime and torch disagree at batch {worst}: max abs difference of "
                           f"normalised embeddings {bad[worst]:.3g} > {tolerance:g} "
                           f"(batch 1: {diffs[1]:.3g}, batch {n}: {diffs[n]:.3g})")
    return {str(k): v for k, v in diffs.items()}
