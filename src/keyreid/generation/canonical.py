"""PN-GAN's canonical poses: k typical body poses of a training set, found by k-means.

PN-GAN renders every image in 8 canonical poses clustered from the training poses; the paper
does not say how poses were normalised, so this module takes the practical reading:

- Normalisation: each pose is centred on its torso centre, the midpoint of the neck and the
  hip midpoint, and divided by its torso length (neck to hip midpoint). Position and size in the
  crop are nuisance; what is left is the body's shape: view (front / back / side), stride, arms.
- Which poses count: only those whose torso is visible (neck and both hips; in OpenPose-18 the
  neck exists only when both shoulders do), since the others cannot be normalised.
- Invisible joints are explicit, never (0, 0) coordinates pulling a centroid to the centre:
  each pose is a vector of (x, y) per joint, MISSING where the joint is invisible, plus a
  visibility indicator per joint scaled by `visibility_weight` (0.5 torso lengths: one joint
  appearing costs as much as a shoulder moving half a torso). Clustering is k-means with missing
  values (k-POD, Chi et al. 2016): missing coordinates are filled with their cluster centre's and
  k-means re-run until the assignment stops changing, so they never add distance. Which joints
  are hidden (a back view hides the face) still separates views through the indicators.
- A canonical pose is its cluster's mean: a joint is visible when at least half of the members
  see it, at the mean of the members where it is visible. Clusters are ordered by size, largest
  first (ties by centroid), so `canonical:0` is the commonest pose.

Deterministic for a seed: scipy's kmeans2 with seeded restarts, the lowest-inertia run kept.

`to_image` puts normalised poses back into a crop like the training images: the median torso
centre (as fractions of the width and height) and the median torso length (a fraction of the
height) of the training set, stored with the poses as a Placement.

The file (canonical.json) holds {"format": "keyreid-canonical-poses", "version": 1, "skeleton",
"poses" ([k][K][3] normalised, visibility 0/1), "placement" ({"cx", "cy", "torso"}), "k",
"seed", "num_poses"}; a PNG of the k skeletons side by side goes beside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy.cluster.vq import kmeans2

from keyreid.data.keypoints import Skeleton, get_skeleton
from keyreid.data.images import image_size as header_size
from keyreid.errors import DataError, KeyreidError
from keyreid.utils.io import atomic_write, atomic_write_text

FORMAT = "keyreid-canonical-poses"
VERSION = 1
TORSO_JOINTS = ("neck", "right_hip", "left_hip")
VISIBILITY_WEIGHT = 0.5
RESTARTS = 10
MAX_ROUNDS = 50


@dataclass(frozen=True)
class Placement:
    """Where a torso sits in the crop: centre (cx of the width, cy of the height) and length (of
    the height). Fractions, so one placement serves any crop of the training aspect ratio."""

    cx: float = 0.5
    cy: float = 0.4
    torso: float = 0.3


@dataclass
class Canonical:
    """Canonical poses with what rendering them needs."""

    poses: np.ndarray                   # float32 [k, K, 3], normalised (torso units), v in {0, 1}
    skeleton: str                       # the generation skeleton's name (openpose18 for people)
    placement: Placement = field(default_factory=Placement)
    meta: dict = field(default_factory=dict)   # k, seed, num_poses

    def pixels(self, height: int, width: int) -> np.ndarray:
        """[k, K, 3] keypoints in pixels of a height x width crop."""
        return to_image(self.poses, height, width, self.placement)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "skeleton": self.skeleton,
                "poses": np.round(self.poses, 5).tolist(), "placement": asdict(self.placement),
                **self.meta}


# ------------------------------------------------------------------------------- normalisation

def _torso_indices(skeleton_keypoints: Sequence[str]) -> tuple[int, int, int]:
    try:
        return tuple(skeleton_keypoints.index(n) for n in TORSO_JOINTS)  # type: ignore[return-value]
    except ValueError:
        raise KeyreidError(f"canonical poses need a skeleton with {', '.join(TORSO_JOINTS)} "
                           f"(OpenPose-18 for people); this one has {', '.join(skeleton_keypoints)}"
                           ) from None


def torso_frame(keypoints: np.ndarray, skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre [N, 2], torso length [N], usable [N] bool) of poses [N, K, 3] in pixels.

    Usable: neck and both hips visible and a torso longer than a pixel."""
    neck, rhip, lhip = _torso_indices(skeleton.keypoints)
    kp = np.asarray(keypoints, dtype=np.float64)
    mid_hip = (kp[:, rhip, :2] + kp[:, lhip, :2]) / 2
    centre = (kp[:, neck, :2] + mid_hip) / 2
    length = np.linalg.norm(kp[:, neck, :2] - mid_hip, axis=1)
    usable = (kp[:, neck, 2] > 0) & (kp[:, rhip, 2] > 0) & (kp[:, lhip, 2] > 0) & (length > 1.0)
    return centre, length, usable


def normalise(keypoints: np.ndarray, skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """(normalised poses [M, K, 3] with v in {0, 1} and invisible rows zero, indices [M] of the
    usable input poses)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    centre, length, usable = torso_frame(kp, skeleton)
    idx = np.flatnonzero(usable)
    out = np.zeros((len(idx), kp.shape[1], 3))
    vis = kp[idx, :, 2] > 0
    out[..., :2] = (kp[idx, :, :2] - centre[idx, None]) / length[idx, None, None]
    out[..., 2] = vis
    out[~vis] = 0.0
    return out, idx


# ------------------------------------------------------------------------------- clustering

def _kmeans(data: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Best of RESTARTS k-means++ runs (lowest inertia): (centroids, labels)."""
    best = None
    for _ in range(RESTARTS):
        cents, labels = kmeans2(data, k, iter=100, minit="++", seed=rng)
        inertia = ((data - cents[labels]) ** 2).sum()
        if best is None or inertia < best[0] - 1e-9:
            best = (inertia, cents, labels)
    return best[1], best[2]


def _kmeans_missing(values: np.ndarray, observed: np.ndarray, k: int, seed: int
                    ) -> np.ndarray:
    """k-POD: labels [N] of k-means on `values` [N, D] whose entries outside `observed` are
    missing (filled with the column mean, then with the assigned centroid, until stable)."""
    rng = np.random.default_rng(seed)
    col_mean = np.where(observed, values, 0).sum(0) / np.maximum(observed.sum(0), 1)
    filled = np.where(observed, values, col_mean)
    cents, labels = _kmeans(filled, k, rng)
    for _ in range(MAX_ROUNDS):
        filled = np.where(observed, values, cents[labels])
        cents, new = kmeans2(filled, cents, iter=100, minit="matrix")
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def canonical_poses(keypoints: np.ndarray, k: int = 8, seed: int = 0, skeleton: Skeleton | None = None,
                    visibility_weight: float = VISIBILITY_WEIGHT) -> np.ndarray:
    """k canonical poses [k, K, 3] (normalised, v in {0, 1}) of poses [N, K, 3] in pixels of the
    generation skeleton (OpenPose-18 by default); see the module docstring for the method."""
    if skeleton is None:
        from keyreid.generation.pose import OPENPOSE18
        skeleton = OPENPOSE18
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[1:] != (skeleton.num_keypoints, 3):
        raise KeyreidError(f"canonical poses: expected keypoints [N, {skeleton.num_keypoints}, 3] "
                           f"of skeleton {skeleton.name}, got {list(kp.shape)}")
    poses, _ = normalise(kp, skeleton)
    if len(poses) < max(k, 1) * 2:
        raise KeyreidError(f"canonical poses: only {len(poses)} of {len(kp)} poses have a visible "
                           f"torso (neck and both hips); k-means into {k} needs at least {2 * k}")
    n, K = poses.shape[:2]
    vis = poses[..., 2] > 0
    values = np.concatenate([poses[..., :2].reshape(n, 2 * K), visibility_weight * vis], axis=1)
    observed = np.concatenate([np.repeat(vis, 2, axis=1), np.ones((n, K), bool)], axis=1)
    labels = _kmeans_missing(values, observed, k, seed)

    out = np.zeros((k, K, 3))
    sizes = np.zeros(k, int)
    for c in range(k):
        members = poses[labels == c]
        sizes[c] = len(members)
        if not len(members):
            continue
        seen = members[..., 2] > 0
        share = seen.mean(0)
        for j in np.flatnonzero(share >= 0.5):
            out[c, j, :2] = members[seen[:, j], j, :2].mean(0)
            out[c, j, 2] = 1.0
    keys = [(-sizes[c], *np.round(out[c].ravel(), 6)) for c in range(k)]
    order = sorted(range(k), key=lambda c: keys[c])
    return out[order].astype(np.float32)


# ------------------------------------------------------------------------------- placement

def placement(keypoints: np.ndarray, heights, widths, skeleton: Skeleton | None = None) -> Placement:
    """Median torso centre (fractions of width, height) and torso length (fraction of height)
    over the usable poses [N, K, 3] of images of the given heights and widths (scalars or [N])."""
    if skeleton is None:
        from keyreid.generation.pose import OPENPOSE18
        skeleton = OPENPOSE18
    kp = np.asarray(keypoints, dtype=np.float64)
    h = np.broadcast_to(np.asarray(heights, dtype=np.float64), (len(kp),))
    w = np.broadcast_to(np.asarray(widths, dtype=np.float64), (len(kp),))
    centre, length, usable = torso_frame(kp, skeleton)
    if not usable.any():
        raise KeyreidError("canonical poses: no pose has a visible torso (neck and both hips)")
    return Placement(cx=round(float(np.median(centre[usable, 0] / w[usable])), 5),
                     cy=round(float(np.median(centre[usable, 1] / h[usable])), 5),
                     torso=round(float(np.median(length[usable] / h[usable])), 5))


def to_image(poses: np.ndarray, height: int, width: int, place: Placement | None = None) -> np.ndarray:
    """Normalised poses [k, K, 3] -> float32 keypoints [k, K, 3] in pixels of a height x width
    crop; invisible rows stay (0, 0, 0). `place`: the training set's Placement (a Placement()
    default otherwise: torso centre at (0.5, 0.4) of the crop, torso 0.3 of its height)."""
    place = place or Placement()
    p = np.asarray(poses, dtype=np.float64)
    scale = place.torso * height
    out = np.zeros(p.shape, dtype=np.float64)
    out[..., 0] = place.cx * width + scale * p[..., 0]
    out[..., 1] = place.cy * height + scale * p[..., 1]
    out[..., 2] = (p[..., 2] > 0).astype(np.float64)
    out[p[..., 2] <= 0] = 0.0
    return out.astype(np.float32)


# ------------------------------------------------------------------------------- from a dataset

def canonical_from_samples(samples, data_skeleton: Skeleton, k: int = 8, seed: int = 0,
                           image_size: Optional[tuple[int, int]] = None) -> Canonical:
    """Canonical poses of dataset samples (keyreid.data.records.Sample with keypoints in the data
    skeleton, e.g. COCO-17): converted to the generation skeleton, clustered, placed.

    image_size (height, width): of every image; None reads each image's size from its header."""
    from keyreid.generation.pose import pose_skeleton

    gen_skeleton, convert = pose_skeleton(data_skeleton)
    with_kp = [s for s in samples if s.keypoints is not None]
    if not with_kp:
        raise KeyreidError("canonical poses: no training image has keypoints (give a sidecar)")
    kp = np.stack([convert(s.keypoints) for s in with_kp])
    if image_size is not None:
        heights, widths = image_size
    else:
        # ImageReadError / ImageTooLarge name the file
        sizes = [header_size(s.path) for s in with_kp]
        widths, heights = (np.array(v, dtype=np.float64) for v in zip(*sizes))
    poses = canonical_poses(kp, k=k, seed=seed, skeleton=gen_skeleton)
    return Canonical(poses, gen_skeleton.name, placement(kp, heights, widths, gen_skeleton),
                     {"k": k, "seed": seed, "num_poses": int(len(kp))})


# ------------------------------------------------------------------------------- files

def picture(canonical: Canonical, height: int = 128, width: int = 64, gap: int = 4) -> np.ndarray:
    """uint8 [H, k * (W + gap) - gap, 3]: the k skeletons side by side, in order, on black."""
    from keyreid.generation.pose import skeleton_image

    skeleton = _skeleton(canonical.skeleton)
    kps = canonical.pixels(height, width)
    tiles = [skeleton_image(kp, skeleton, height, width) for kp in kps]
    out = np.full((height, len(tiles) * (width + gap) - gap, 3), 40, dtype=np.uint8)
    for i, t in enumerate(tiles):
        out[:, i * (width + gap): i * (width + gap) + width] = t
    return out


def _skeleton(name: str) -> Skeleton:
    from keyreid.generation.pose import OPENPOSE18

    return OPENPOSE18 if name == OPENPOSE18.name else get_skeleton(name)


def write_canonical(path: str | Path, poses: Canonical | np.ndarray, skeleton: Skeleton | str | None = None,
                    picture_path: str | Path | None = None, place: Placement | None = None,
                    picture_size: tuple[int, int] = (128, 64)) -> Canonical:
    """Write canonical.json (atomic) and, if picture_path, a PNG of the skeletons side by side.

    `poses`: a Canonical, or a normalised array [k, K, 3] with its skeleton (and placement)."""
    if not isinstance(poses, Canonical):
        if skeleton is None:
            raise KeyreidError("write_canonical: an array of poses needs its skeleton")
        name = skeleton if isinstance(skeleton, str) else skeleton.name
        arr = np.asarray(poses, dtype=np.float32)
        poses = Canonical(arr, name, place or Placement(), {"k": int(len(arr))})
    atomic_write_text(path, json.dumps(poses.to_dict(), indent=1) + "\n")
    if picture_path is not None:
        from PIL import Image

        img = Image.fromarray(picture(poses, *picture_size))
        atomic_write(picture_path, lambda tmp: img.save(tmp, format="PNG"))
    return poses


def canonical_from_dict(data: dict, where: str = "canonical poses") -> Canonical:
    """A Canonical from the content of canonical.json (e.g. a checkpoint card's copy)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(where, f"not a canonical-poses file (expected \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise DataError(where, f"canonical-poses version {data.get('version')!r} is not supported "
                               f"(this keyreid reads version {VERSION})")
    try:
        skeleton = _skeleton(str(data["skeleton"]))
        poses = np.asarray(data["poses"], dtype=np.float32)
        place = Placement(**{k: float(v) for k, v in data.get("placement", {}).items()})
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(where, f"malformed canonical poses ({e})") from None
    if poses.ndim != 3 or poses.shape[1:] != (skeleton.num_keypoints, 3) or not np.isfinite(poses).all():
        raise DataError(where, f"poses must be finite [k, {skeleton.num_keypoints}, 3] for skeleton "
                               f"{skeleton.name}, got {list(poses.shape)}")
    meta = {k: data[k] for k in ("k", "seed", "num_poses") if k in data}
    return Canonical(poses, skeleton.name, place, meta)


def read_canonical(path: str | Path) -> Canonical:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "canonical-poses file not found (`keyreid generate poses` writes one)"
                        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read canonical poses ({e})") from None
    return canonical_from_dict(data, str(path))


__all__ = ["Canonical", "Placement", "canonical_from_dict", "canonical_from_samples",
           "canonical_poses", "normalise", "picture", "placement", "read_canonical", "to_image",
           "torso_frame", "write_canonical"]
