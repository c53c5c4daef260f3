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


# ----------------------------------------------------------------------------------------------
# Parity in retrieval terms: what an export costs where it matters, the rankings. Every format
# is measured the same way (fp32 ONNX costs nothing, int8 a little) on a held-out labelled set
# and the export is refused when it costs more than the user allows.

MAX_MAP_DROP = 0.5          # mAP points an export may lose against the fp32 torch model
MIN_TOP10_OVERLAP = 0.95    # mean share of each query's top 10 that the export keeps
MIN_MEAN_COSINE = 0.98      # without labels: the only guard against a broken export
PARITY_QUERIES = 200        # a larger split is subsampled: the comparison is export vs torch
PARITY_GALLERY = 1000       # on the same images, so a subset measures the difference well
TOP_K = 10
TIE = 1e-6                  # reference distances closer than this are ties (float noise)


@dataclass
class HeldOut:
    """Images to compare the export and the torch model on: a labelled query/gallery split, or
    (query and gallery None) unlabelled generated images."""

    images: list            # query images then gallery images (paths), or uint8 arrays
    source: str
    query: Optional[list] = None     # Samples (pid, camid)
    gallery: Optional[list] = None
    note: Optional[str] = None       # why there are no labels, for the log


def _subset(query: list, gallery: list) -> tuple[list, list]:
    """At most PARITY_QUERIES queries spread over the identities, with every gallery image of
    theirs (the positives) and the rest of the gallery spread evenly up to PARITY_GALLERY."""
    if len(query) <= PARITY_QUERIES and len(gallery) <= PARITY_GALLERY:
        return query, gallery
    query = sorted(query, key=lambda s: (s.pid, s.camid, s.path))
    if len(query) > PARITY_QUERIES:
        idx = np.linspace(0, len(query) - 1, PARITY_QUERIES).round().astype(int)
        query = [query[i] for i in sorted(set(idx.tolist()))]
    pids = {s.pid for s in query}
    positives = [s for s in gallery if s.pid in pids]
    others = [s for s in gallery if s.pid not in pids]
    room = max(0, PARITY_GALLERY - len(positives))
    if len(others) > room:
        idx = np.linspace(0, len(others) - 1, room).round().astype(int) if room else []
        others = [others[i] for i in sorted(set(np.asarray(idx).tolist()))]
    return query, positives + others


def _market_split(root: Path) -> tuple[list, list]:
    """query/ and bounding_box_test/ (or gallery/) under `root` (or its Market release folder),
    labels read from Market-style names."""
    from keyreid.data.datasets.base import ProblemLog
    from keyreid.data.datasets.market1501 import NAME_FORMAT, RELEASE_DIR, _market_parser, parse_named_folders

    if not root.is_dir():
        raise KeyreidError(f"{root}: --parity-root is not a folder")
    for base in (root, root / RELEASE_DIR):
        gallery = next((d for d in ("bounding_box_test", "gallery") if (base / d).is_dir()), None)
        if (base / "query").is_dir() and gallery:
            splits = parse_named_folders(base, {"query": "query", "gallery": gallery},
                                         _market_parser(9), NAME_FORMAT, ProblemLog("raise"))
            if not splits["query"] or not splits["gallery"]:
                raise KeyreidError(f"{base}: --parity-root has no labelled "
                                   f"{'query' if not splits['query'] else 'gallery'} images")
            return splits["query"], splits["gallery"]
    raise KeyreidError(f"{root}: --parity-root needs query/ and bounding_box_test/ (or gallery/) "
                       f"folders of Market-style names ({NAME_FORMAT})")


def _dataset_split(config) -> tuple[Optional[tuple[list, list]], str]:
    """The test split of the dataset the checkpoint was trained on, when it is here."""
    data = getattr(config, "data", None)
    if data is None or not data.root or not Path(data.root).is_dir():
        return None, "the training dataset is not here"
    from keyreid.data.datasets import build_dataset

    try:
        ds = build_dataset(data.dataset, data.root, **{k: v for k, v in (data.options or {}).items()
                                                        if k != "keypoints"})
    except (KeyreidError, OSError, KeyError, ValueError, TypeError) as e:
        return None, f"{data.dataset} at {data.root} does not parse ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
    if ds.protocol != "reid" or not ds.query or not ds.gallery:
        return None, f"{data.dataset} has no re-ID query/gallery split"
    return (ds.query, ds.gallery), f"{data.dataset} test split at {data.root}"


def held_out_set(parity_root: Optional[Path], config, input_hw: tuple[int, int]) -> HeldOut:
    """--parity-root when given (the user's choice), else the checkpoint's dataset test split,
    else generated images (embedding differences only)."""
    if parity_root is not None:
        pair, source = _market_split(Path(parity_root)), str(parity_root)
    else:
        pair, source = _dataset_split(config)
    if pair is None:
        return HeldOut(generated_images(2 * PARITY_IMAGES, *input_hw, seed=1), "generated",
                       note=f"parity: {source} and no --parity-root given; retrieval metrics need "
                            "labels, so only embedding differences are measured, on generated images")
    query, gallery = _subset(*pair)
    return HeldOut([s.path for s in query] + [s.path for s in gallery], source, query, gallery)


def top_k_overlap(dist_ref: np.ndarray, dist_exp: np.ndarray, k: int = TOP_K, tie: float = TIE) -> float:
    """Mean over queries of the share of the export's top k that is in the reference's top k
    (k cut to the gallery size). An item whose reference distance is within `tie` (relative,
    at least absolute) of the reference's k-th counts as in it: items the reference itself
    cannot tell apart (a weak or untrained model puts many within float noise of each other)
    are not a different ranking when float noise orders them otherwise."""
    k = min(k, dist_ref.shape[1])
    shares = []
    for ref, exp in zip(dist_ref.astype(np.float64), dist_exp):
        kth = np.sort(ref, kind="stable")[k - 1]
        chosen = np.argsort(exp, kind="stable")[:k]
        shares.append(float(np.count_nonzero(ref[chosen] <= kth + tie * max(1.0, abs(kth)))) / k)
    return float(np.mean(shares))


def embedding_agreement(reference: np.ndarray, exported: np.ndarray) -> dict:
    """Max abs difference and mean / min cosine of the L2-normalised embeddings."""
    a, b = _unit(reference.astype(np.float64)), _unit(exported.astype(np.float64))
    cos = (a * b).sum(1)
    return {"max_abs_diff": float(np.abs(a - b).max()), "mean_cosine": float(cos.mean()),
            "min_cosine": float(cos.min())}


def retrieval_parity(reference: np.ndarray, exported: np.ndarray, held: HeldOut, distance: str) -> dict:
    """The export's retrieval numbers against the torch model's, from the two feature arrays
    (rows in held.images order: queries, then gallery)."""
    from keyreid.evaluation.distance import distance_matrix
    from keyreid.evaluation.reid import EvaluationError, evaluate

    out = {"source": held.source, "images": len(held.images), **embedding_agreement(reference, exported)}
    if held.query is None:
        return out
    nq = len(held.query)
    labels = (np.array([s.pid for s in held.query]), np.array([s.pid for s in held.gallery]),
              np.array([s.camid for s in held.query]), np.array([s.camid for s in held.gallery]))
    dists, scores = [], {}
    for name, feats in (("torch", reference), ("export", exported)):
        d = distance_matrix(feats[:nq], feats[nq:], distance)
        try:
            m = evaluate(d, *labels, max_rank=min(50, d.shape[1]))
        except EvaluationError as e:  # e.g. no query has a match in another camera
            raise KeyreidError(f"{held.source}: cannot evaluate parity on it ({e})") from None
        dists.append(d)
        scores[name] = {"mAP": 100 * float(m.mAP), "rank1": 100 * float(m.cmc[0])}
    out.update({"queries": nq, "gallery": len(held.gallery), "distance": distance, **scores,
                "map_drop": scores["torch"]["mAP"] - scores["export"]["mAP"],
                "rank1_drop": scores["torch"]["rank1"] - scores["export"]["rank1"],
                "top10_overlap": top_k_overlap(*dists)})
    return out


def check_retrieval(parity: dict, max_map_drop: float = MAX_MAP_DROP,
                    min_overlap: float = MIN_TOP10_OVERLAP, min_cosine: float = MIN_MEAN_COSINE) -> None:
    """KeyreidError (one line) when the export costs more than allowed."""
    if "map_drop" in parity:
        if not parity["map_drop"] <= max_map_drop:  # NaN fails too
            raise KeyreidError(f"mAP {parity['torch']['mAP']:.2f} (torch) -> {parity['export']['mAP']:.2f} "
                               f"(export) on {parity['source']}, a drop of {parity['map_drop']:.2f} "
                               f"points; --max-map-drop {max_map_drop:g} allows less")
        if not parity["top10_overlap"] >= min_overlap:
            raise KeyreidError(f"top-10 rankings overlap {parity['top10_overlap']:.3f} with the torch "
                               f"model's on {parity['source']} (at least {min_overlap:g} needed)")
    elif not parity["mean_cosine"] >= min_cosine:
        raise KeyreidError(f"mean cosine with the torch model's embeddings {parity['mean_cosine']:.4f} "
                           f"on generated images (at least {min_cosine:g} needed; pass --parity-root "
                           "for a retrieval check)")


def describe_retrieval(parity: dict) -> str:
    """One printed line of what `retrieval_parity` found."""
    emb = (f"max embedding difference {parity['max_abs_diff']:.3g}, mean cosine "
           f"{parity['mean_cosine']:.4f}")
    if "map_drop" not in parity:
        return f"parity on {parity['images']} generated images: {emb}"
    t, e = parity["torch"], parity["export"]
    return (f"parity on {parity['source']} ({parity['queries']} queries, {parity['gallery']} gallery): "
            f"mAP {t['mAP']:.2f} -> {e['mAP']:.2f} ({-parity['map_drop']:+.2f} points), rank-1 "
            f"{t['rank1']:.2f} -> {e['rank1']:.2f}, top-10 overlap {parity['top10_overlap']:.3f}, {emb}")
