"""PN-GAN's re-ID use: every image re-drawn in the canonical poses, and the features fused.

The paper's protocol (methods.md section 7), on a Market-layout dataset:

(a) a re-ID net trained on the original images;
(b) a re-ID net trained on generated images only: every training image re-drawn by PN-GAN in
    each of the k canonical poses. At test time every query / gallery image is re-drawn in the
    same k poses, net (b) embeds the k renderings, each feature is L2-normalised and the k are
    fused by average, element-wise max or concatenation; optionally with net (a)'s feature of
    the original image (both L2-normalised, then concatenated: equal weight, as the paper's
    figure fuses them; the released code has no such step);
(c) generated images as augmentation: originals plus their canonical-pose renderings.

Generated images are written as a Market-layout tree, so keyreid's trainer reads them like any
dataset: a rendering of PPPP_cCsS_FFFFFF_NN.jpg in pose p (0-based) is
PPPP_cCs<S*10+p+1>_FFFFFF_NN.jpg (same identity and camera: the background and camera are the
source's; the sequence field keeps the names unique and says the pose). Rendering is resumable:
files are written atomically and existing ones are kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from keyreid.data.loader import read_image
from keyreid.data.records import Sample
from keyreid.errors import DataError, KeyreidError
from keyreid.generation.canonical import Canonical, canonical_from_dict
from keyreid.generation.pose import from_unit_range, to_unit_range
from keyreid.utils.io import atomic_write
from keyreid.utils.progress import progress_bar

SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d+)_(\d{6})_(\d{2})\.(?:jpe?g|png)$", re.IGNORECASE)
FUSIONS = ("avg", "max", "concat")
JPEG_QUALITY = 95


def method_canonical(method) -> Canonical:
    """The canonical poses a trained PN-GAN carries in its card (method_options.canonical)."""
    data = method.card().get("canonical") if hasattr(method, "card") else None
    if not data:
        raise KeyreidError("this PN-GAN has no canonical poses: train it with "
                           "method_options.canonical=canonical.json (`keyreid generate poses`)")
    return canonical_from_dict(data, "the checkpoint card")


def rendered_name(name: str, pose: int) -> str:
    """The Market name of source `name` rendered in canonical pose `pose` (see the docstring)."""
    m = _NAME.match(name)
    if m is None:
        raise DataError(name, "not a Market-style name (PPPP_cCsS_FFFFFF_NN.jpg); PN-GAN's "
                              "generated sets use that layout")
    pid, cam, seq, frame, box = m.groups()
    return f"{pid}_c{cam}s{int(seq) * 10 + pose + 1}_{frame}_{box}.jpg"


def _model_hw(method) -> tuple[int, int]:
    return int(method.height), int(method.width)


def load_source(path: str | Path, height: int, width: int) -> torch.Tensor:
    """[3, H, W] in [-1, 1]: the image resized as PairDataset resizes training images."""
    im = read_image(str(path))
    if im.size != (width, height):
        im = im.resize((width, height), Image.BILINEAR)
    return to_unit_range(np.asarray(im, dtype=np.uint8))


@torch.no_grad()
def render_poses(method, sources: torch.Tensor, poses_px: np.ndarray) -> np.ndarray:
    """uint8 [B, k, H, W, 3]: every source [B, 3, H, W] in every pose of poses_px [k, K, 3]."""
    b, k = sources.shape[0], len(poses_px)
    src = sources.repeat_interleave(k, dim=0)
    kp = torch.as_tensor(np.tile(np.asarray(poses_px, np.float32), (b, 1, 1)))
    out = method.render(src, kp)
    return from_unit_range(out.cpu()).reshape(b, k, *out.shape[-2:], 3)


def pose_choice(n: int, k: int, per_image: Optional[int], seed: int) -> list[list[int]]:
    """Per sample, the canonical poses to render: all k (per_image None or >= k), else
    `per_image` distinct ones drawn per sample from (seed, sample index)."""
    if per_image is None or per_image >= k:
        return [list(range(k)) for _ in range(n)]
    if per_image < 1:
        raise ValueError(f"poses per image must be >= 1, got {per_image}")
    return [sorted(np.random.default_rng([seed, i]).choice(k, size=per_image, replace=False).tolist())
            for i in range(n)]


def render_samples(method, samples: Sequence[Sample], canonical: Canonical, out_dir: str | Path,
                   poses: Optional[Sequence[Sequence[int]]] = None, batch_size: int = 32,
                   show_progress: bool = True, description: str = "rendering") -> list[list[Path]]:
    """Render each sample in its canonical poses (`poses[i]`, default all k) into out_dir (JPEG,
    Market names); returns per sample the paths of its poses, in order. Images already there are
    kept (a killed run resumes); batch_size counts renderings."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    h, w = _model_hw(method)
    pixels = canonical.pixels(h, w)
    k = len(pixels)
    chosen = [list(range(k)) for _ in samples] if poses is None else [list(p) for p in poses]
    paths = [[out_dir / rendered_name(Path(s.path).name, p) for p in ps] for s, ps in zip(samples, chosen)]
    jobs = [(i, p, path) for i, ps in enumerate(chosen) for p, path in zip(ps, paths[i]) if not path.is_file()]
    was_training = method.training
    method.eval()
    try:
        with progress_bar(show_progress) as bar:
            total = sum(len(ps) for ps in chosen)
            task = bar.add_task(description, total=total, completed=total - len(jobs))
            previous: dict[int, torch.Tensor] = {}   # a sample's poses may straddle two chunks
            for start in range(0, len(jobs), batch_size):
                chunk = jobs[start:start + batch_size]
                loaded: dict[int, torch.Tensor] = {}
                for i, _, _ in chunk:
                    if i not in loaded:
                        loaded[i] = previous[i] if i in previous else load_source(samples[i].path, h, w)
                previous = loaded
                src = torch.stack([loaded[i] for i, _, _ in chunk])
                kp = torch.as_tensor(np.stack([pixels[p] for _, p, _ in chunk]))
                with torch.no_grad():
                    images = from_unit_range(method.render(src, kp).cpu())
                for (_, _, path), img in zip(chunk, images):
                    pil = Image.fromarray(img)
                    atomic_write(path, lambda tmp, pil=pil: pil.save(tmp, format="JPEG", quality=JPEG_QUALITY))
                bar.advance(task, len(chunk))
    finally:
        method.train(was_training)
    return paths


def _link(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(Path(src).resolve())


@dataclass
class GeneratedSet:
    root: Path
    generated: int          # rendered training images in the tree
    originals: int          # original training images linked in


def write_training_tree(method, train: Sequence[Sample], canonical: Canonical, data_root: str | Path,
                        out_root: str | Path, originals: bool, exclude_pids: Iterable[int] = (),
                        renders_dir: str | Path | None = None, poses_per_image: Optional[int] = None,
                        seed: int = 0, show_progress: bool = True) -> GeneratedSet:
    """A Market-layout dataset at out_root whose bounding_box_train links to the canonical-pose
    renderings of `train` (minus exclude_pids) and, with `originals`, to every original training
    image; query/ and bounding_box_test/ link to data_root's, so a re-ID run on the tree is
    tested on the real test split. Renderings go to renders_dir (default out_root/renders), so
    several trees can share one rendering of the training set. poses_per_image: all k canonical
    poses (None, the paper's), or that many drawn per image (pose_choice with `seed`): with 1,
    a generated set as large as the original, so the same epochs are the same steps."""
    out_root, data_root = Path(out_root), Path(data_root)
    renders_dir = Path(renders_dir) if renders_dir is not None else out_root / "renders"
    excluded = set(int(p) for p in exclude_pids)
    index = [i for i, s in enumerate(train) if s.pid not in excluded]
    chosen = [train[i] for i in index]
    every = pose_choice(len(train), len(canonical.poses), poses_per_image, seed)
    rendered = render_samples(method, chosen, canonical, renders_dir, poses=[every[i] for i in index],
                              show_progress=show_progress, description="canonical poses (train)")
    train_dir = out_root / SPLIT_DIRS["train"]
    train_dir.mkdir(parents=True, exist_ok=True)
    for path in (p for ps in rendered for p in ps):
        _link(path, train_dir / path.name)
    if originals:
        for s in train:
            _link(Path(s.path), train_dir / Path(s.path).name)
    for split in ("query", "gallery"):
        _link(data_root / SPLIT_DIRS[split], out_root / SPLIT_DIRS[split])
    return GeneratedSet(out_root, sum(len(ps) for ps in rendered), len(train) if originals else 0)


# ------------------------------------------------------------------------------- fused features

def normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-12)


def fuse(features: np.ndarray, how: str) -> np.ndarray:
    """[N, k, D] per-pose features -> [N, D'] (each pose's feature L2-normalised first):
    avg -> mean, max -> element-wise max, concat -> [N, k * D]."""
    if how not in FUSIONS:
        raise ValueError(f"unknown fusion {how!r}; one of {', '.join(FUSIONS)}")
    f = normalize(np.asarray(features, np.float32))
    if how == "avg":
        return f.mean(1)
    if how == "max":
        return f.max(1)
    return f.reshape(len(f), -1)


def with_original(fused: np.ndarray, original: np.ndarray) -> np.ndarray:
    """[normalize(fused), normalize(original)]: both at equal weight in a cosine distance."""
    return np.concatenate([normalize(fused), normalize(original)], axis=1)


def cosine_distances(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return 1.0 - normalize(q) @ normalize(g).T


def embed_rendered(model, paths: Sequence[Sequence[Path]], batch_size: int = 128) -> np.ndarray:
    """[N, k, D]: a keyreid LoadedModel's embeddings of each sample's k renderings."""
    flat = [p for ps in paths for p in ps]
    feats = model.embed([str(p) for p in flat], batch_size=batch_size, normalize=False)
    return feats.reshape(len(paths), len(paths[0]), -1)


def fusion_metrics(query: Sequence[Sample], gallery: Sequence[Sample], q_rendered: np.ndarray,
                   g_rendered: np.ndarray, q_original: Optional[np.ndarray] = None,
                   g_original: Optional[np.ndarray] = None, max_rank: int = 50) -> dict[str, dict]:
    """Re-ID metrics (keyreid.evaluation: R1, mAP, mINP, ...) of every fusion of the rendered
    features [N, k, D], and of each fusion with the original images' features [N, D] when given.
    Keys: "fused avg", "fused max", "fused concat", "fused avg + original", ..., "original"."""
    from keyreid.evaluation.split import reid_metrics

    out = {}
    for how in FUSIONS:
        qf, gf = fuse(q_rendered, how), fuse(g_rendered, how)
        out[f"fused {how}"] = reid_metrics(cosine_distances(qf, gf), query, gallery, max_rank)
        if q_original is not None:
            out[f"fused {how} + original"] = reid_metrics(
                cosine_distances(with_original(qf, q_original), with_original(gf, g_original)),
                query, gallery, max_rank)
    if q_original is not None:
        out["original"] = reid_metrics(cosine_distances(q_original, g_original), query, gallery, max_rank)
    return out


__all__ = ["FUSIONS", "GeneratedSet", "cosine_distances", "embed_rendered", "fuse", "fusion_metrics",
           "load_source", "method_canonical", "normalize", "pose_choice", "render_poses", "render_samples",
           "rendered_name", "with_original", "write_training_tree"]
