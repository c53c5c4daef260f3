"""Skeletons drawn over images (PIL only), and a PNG grid of them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from keyreid.data.keypoints import Skeleton

# Left side warm, right side cool, centre green: a mirrored skeleton is visible at a glance.
LEFT, RIGHT, CENTRE = (255, 80, 40), (40, 140, 255), (60, 220, 90)


def side_colour(name: str) -> tuple[int, int, int]:
    """The colour of a keypoint by its name's side (the page uses the same)."""
    if name.startswith("left"):
        return LEFT
    if name.startswith("right"):
        return RIGHT
    return CENTRE


def draw_skeleton(image: Image.Image, keypoints: Optional[np.ndarray], skeleton: Skeleton,
                  scale: float = 3.0, min_confidence: float = 0.0,
                  hollow_invisible: bool = True) -> Image.Image:
    """A copy of `image` upscaled by `scale` with limbs and keypoints drawn.

    Keypoints with v <= min_confidence (or v == 0) count as invisible: no limb touches them and
    they are drawn as hollow circles (hollow_invisible) or not at all. Coordinates are pixel
    centres of the original image.
    """
    img = image.convert("RGB")
    w, h = img.size
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = img.resize(size, Image.BICUBIC)
    if keypoints is None:
        return img
    kp = np.asarray(keypoints, dtype=np.float64)
    draw = ImageDraw.Draw(img)
    sx, sy = size[0] / w, size[1] / h
    xy = np.stack([(kp[:, 0] + 0.5) * sx, (kp[:, 1] + 0.5) * sy], axis=1)  # continuous coords
    vis = (kp[:, 2] > 0) & (kp[:, 2] > min_confidence)
    r = max(2.0, 0.9 * scale)
    width = max(1, round(0.7 * scale))
    for a, b in skeleton.limbs:
        if vis[a] and vis[b]:
            name_a, name_b = skeleton.keypoints[a], skeleton.keypoints[b]
            colour = side_colour(name_a) if side_colour(name_a) == side_colour(name_b) else CENTRE
            draw.line([tuple(xy[a]), tuple(xy[b])], fill=colour, width=width)
    for i, name in enumerate(skeleton.keypoints):
        if not np.isfinite(xy[i]).all():
            continue
        box = [xy[i, 0] - r, xy[i, 1] - r, xy[i, 0] + r, xy[i, 1] + r]
        if vis[i]:
            draw.ellipse(box, fill=side_colour(name), outline=(0, 0, 0))
        elif hollow_invisible and kp[i, 2] > 0:
            # below the confidence threshold: hollow; v == 0 (absent) is not drawn at all
            draw.ellipse(box, outline=side_colour(name), width=1)
    return img


def skeleton_grid(images: Sequence[Image.Image], keypoints: Sequence[Optional[np.ndarray]],
                  skeleton: Skeleton, columns: int = 8, scale: float = 3.0,
                  captions: Optional[Sequence[str]] = None,
                  min_confidence: float = 0.0) -> Image.Image:
    """One image with the skeleton-annotated tiles in rows of `columns` (tiles padded to the
    largest tile size, white background)."""
    if len(images) != len(keypoints):
        raise ValueError("need one keypoint array (or None) per image")
    if not images:
        raise ValueError("no images to draw")
    tiles = [draw_skeleton(im, kp, skeleton, scale=scale, min_confidence=min_confidence)
             for im, kp in zip(images, keypoints)]
    cap_h = 14 if captions else 0
    tw = max(t.width for t in tiles)
    th = max(t.height for t in tiles) + cap_h
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    pad = 4
    grid = Image.new("RGB", (columns * (tw + pad) + pad, rows * (th + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, tile in enumerate(tiles):
        x = pad + (i % columns) * (tw + pad)
        y = pad + (i // columns) * (th + pad)
        grid.paste(tile, (x, y))
        if captions:
            draw.text((x + 1, y + tile.height + 1), str(captions[i])[: max(4, tw // 6)],
                      fill=(0, 0, 0))
    return grid


def save_skeleton_grid(path: str | Path, images, keypoints, skeleton: Skeleton,
                       **kwargs) -> Path:
    """skeleton_grid written as PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skeleton_grid(images, keypoints, skeleton, **kwargs).save(path, format="PNG")
    return path
