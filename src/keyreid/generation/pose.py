"""The pose inputs of pose-guided generators, and the image range they work in.

PN-GAN and FD-GAN both take OpenPose's 18-point order (their pose files come from OpenPose), so
COCO-17 keypoints are converted: the neck OpenPose has and COCO lacks is the mid-point of the
shoulders, visible only when both shoulders are. Other skeletons (cub15, veri20) are used as they
are. A keypoint with visibility 0 is an all-zero row everywhere here, so "missing" has one
spelling (the authors' pose files use (0, 0) too) and flips or resizes never move it.

Coordinates follow keyreid.data.keypoints: pixels, integer values at pixel centres.

Flipping an image must also swap the left/right channels of its pose: FD-GAN's code mirrors the
maps only, which teaches its generator that a right shoulder on the left of the image is normal.
"""

from __future__ import annotations

import colorsys
from typing import Callable

import numpy as np
import torch

from keyreid.data.keypoints import COCO17, Skeleton, render_heatmaps

_OPENPOSE18 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)


def _index_pairs(names, pairs):
    return tuple((names.index(a), names.index(b)) for a, b in pairs)


OPENPOSE18 = Skeleton(
    name="openpose18",
    keypoints=_OPENPOSE18,
    flip_pairs=_index_pairs(_OPENPOSE18, [(f"right_{p}", f"left_{p}") for p in
                                          ("shoulder", "elbow", "wrist", "hip", "knee", "ankle",
                                           "eye", "ear")]),
    # OpenPose's 17 drawn limbs (its limbSeq without the two ear-shoulder links), in its order,
    # so limb i has OpenPose's colour i.
    limbs=((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
           (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)),
)

# OPENPOSE18 index -> COCO17 index (the neck, 1, is the shoulders' mid-point instead).
_FROM_COCO = np.array([0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3])
_COCO_LEFT_SHOULDER, _COCO_RIGHT_SHOULDER = 5, 6


def _zero_invisible(kp: np.ndarray) -> np.ndarray:
    kp[kp[:, 2] <= 0] = 0.0
    return kp


def coco17_to_openpose18(kp: np.ndarray) -> np.ndarray:
    """[17, 3] COCO-17 keypoints -> float32 [18, 3] in OpenPose order; missing points are (0, 0, 0)."""
    kp = np.asarray(kp, dtype=np.float32)
    if kp.shape != (17, 3):
        raise ValueError(f"expected COCO-17 keypoints of shape (17, 3), got {kp.shape}")
    kp = _zero_invisible(kp.copy())
    out = kp[np.maximum(_FROM_COCO, 0)].copy()
    ls, rs = kp[_COCO_LEFT_SHOULDER], kp[_COCO_RIGHT_SHOULDER]
    if ls[2] > 0 and rs[2] > 0:
        out[1] = [(ls[0] + rs[0]) / 2, (ls[1] + rs[1]) / 2, min(ls[2], rs[2])]
    else:
        out[1] = 0.0
    return out


def _same_keypoints(kp: np.ndarray) -> np.ndarray:
    return _zero_invisible(np.array(kp, dtype=np.float32, copy=True))


def pose_skeleton(skeleton: Skeleton) -> tuple[Skeleton, Callable[[np.ndarray], np.ndarray]]:
    """The skeleton generation uses for data of `skeleton`, and the converter of keypoints to it.

    coco17 -> (OPENPOSE18, coco17_to_openpose18); any other skeleton (cub15, veri20, openpose18)
    -> (itself, a copy with invisible rows zeroed)."""
    if skeleton.name == COCO17.name:
        return OPENPOSE18, coco17_to_openpose18
    return skeleton, _same_keypoints


def flip_keypoints(kp: np.ndarray, width: int, skeleton: Skeleton) -> np.ndarray:
    """Keypoints of the horizontally mirrored image: x -> width - 1 - x AND left <-> right swapped,
    so channel "right_shoulder" still holds the person's right shoulder. Missing rows stay zero."""
    kp = np.asarray(kp, dtype=np.float32)
    if kp.shape != (skeleton.num_keypoints, 3):
        raise ValueError(f"expected keypoints of shape ({skeleton.num_keypoints}, 3) for skeleton "
                         f"{skeleton.name}, got {kp.shape}")
    out = kp.copy()
    out[:, 0] = (width - 1) - out[:, 0]
    return _zero_invisible(out[skeleton.flip_permutation()])


def pose_maps(kp: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """float32 [K, H, W] Gaussian maps (sigma in pixels), peak exactly 1 at a visible joint on a
    pixel centre; the channel of a missing joint, or one outside the image, is all zero."""
    maps, _ = render_heatmaps(np.asarray(kp, dtype=np.float32), (height, width), stride=1,
                              sigma=sigma)
    return maps


# ---------------------------------------------------------------------------------- skeleton image

# OpenPose draws limbs blended at 0.6 over black, joints opaque: limb colours are 0.6 x the wheel,
# which also keeps every limb colour distinct from every joint colour.
LIMB_INTENSITY = 0.6


def wheel_colours(n: int) -> np.ndarray:
    """n fully saturated colours in hue steps of 360/n degrees from red, uint8 [n, 3]. For n = 18
    these are exactly OpenPose's 18 colours ((255, 0, 0), (255, 85, 0), (255, 170, 0), ...)."""
    rgb = [colorsys.hsv_to_rgb(i / n, 1.0, 1.0) for i in range(n)]
    return np.round(np.array(rgb) * 255).astype(np.uint8).reshape(n, 3)


def skeleton_colours(skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """(joint colours uint8 [K, 3], limb colours uint8 [L, 3]): one wheel of max(K, L) hues, joint
    j and limb i taking hue j and i (OpenPose's scheme), limbs at LIMB_INTENSITY."""
    n = max(skeleton.num_keypoints, len(skeleton.limbs), 1)
    wheel = wheel_colours(n)
    joints = wheel[: skeleton.num_keypoints]
    limbs = np.round(wheel[: len(skeleton.limbs)].astype(np.float64) * LIMB_INTENSITY).astype(np.uint8)
    return joints, limbs


def default_thickness(height: int) -> float:
    """Limb width in pixels: 4 at 128 px high, 8 at 256 (OpenPose's stick width scaled), >= 1."""
    return max(1.0, height / 64 * 2)


def skeleton_image(kp: np.ndarray, skeleton: Skeleton, height: int, width: int,
                   thickness: float | None = None) -> np.ndarray:
    """uint8 [H, W, 3]: limbs as bands `thickness` wide in their colours, then joint discs of
    radius 0.75 x thickness on top, on black; a limb is drawn only when both ends are visible.

    Drawn by exact pixel-centre distances (no anti-aliasing), so every drawn pixel has exactly its
    limb's or joint's colour and a test can find them; later limbs and joints overwrite earlier."""
    kp = np.asarray(kp, dtype=np.float64)
    if kp.shape != (skeleton.num_keypoints, 3):
        raise ValueError(f"expected keypoints of shape ({skeleton.num_keypoints}, 3) for skeleton "
                         f"{skeleton.name}, got {kp.shape}")
    width_px = default_thickness(height) if thickness is None else float(thickness)
    half = width_px / 2
    radius = 0.75 * width_px
    joint_colours, limb_colours = skeleton_colours(skeleton)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    visible = kp[:, 2] > 0

    def paint(lo: np.ndarray, hi: np.ndarray, inside, colour) -> None:
        """Colour the pixels of box [lo, hi] (x, y, clipped to the image) where inside(xs, ys)."""
        x0, y0 = max(0, int(np.floor(lo[0]))), max(0, int(np.floor(lo[1])))
        x1, y1 = min(width - 1, int(np.ceil(hi[0]))), min(height - 1, int(np.ceil(hi[1])))
        if x0 > x1 or y0 > y1:
            return
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
        canvas[y0:y1 + 1, x0:x1 + 1][inside(xs, ys)] = colour

    for (a, b), colour in zip(skeleton.limbs, limb_colours):
        if not (visible[a] and visible[b]):
            continue
        p, q = kp[a, :2], kp[b, :2]
        d = q - p
        length2 = float(d @ d)

        def on_band(xs, ys, p=p, d=d, length2=length2):
            t = 0.0 if length2 == 0 else np.clip(((xs - p[0]) * d[0] + (ys - p[1]) * d[1]) / length2, 0, 1)
            return (xs - p[0] - t * d[0]) ** 2 + (ys - p[1] - t * d[1]) ** 2 <= half * half

        paint(np.minimum(p, q) - half, np.maximum(p, q) + half, on_band, colour)
    for j in np.flatnonzero(visible):
        c = kp[j, :2]
        paint(c - radius, c + radius,
              lambda xs, ys, c=c: (xs - c[0]) ** 2 + (ys - c[1]) ** 2 <= radius * radius,
              joint_colours[j])
    return canvas


# ---------------------------------------------------------------------------------- image range

def to_unit_range(img_uint8) -> torch.Tensor:
    """uint8 [H, W, 3] (array or PIL image) -> float32 [3, H, W] in [-1, 1] (v / 127.5 - 1):
    the range a Tanh generator can reach, unlike ImageNet-normalised targets."""
    arr = np.asarray(img_uint8)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {arr.dtype} {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32)
    return t / 127.5 - 1.0


def from_unit_range(t: torch.Tensor) -> np.ndarray:
    """[3, H, W] or [B, 3, H, W] in [-1, 1] -> uint8 [H, W, 3] or [B, H, W, 3] (clamped, rounded);
    exactly inverts to_unit_range."""
    if t.dim() not in (3, 4) or t.shape[-3] != 3:
        raise ValueError(f"expected [3, H, W] or [B, 3, H, W], got {list(t.shape)}")
    v = ((t.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return v.movedim(-3, -1).numpy()
