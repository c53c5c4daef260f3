"""Sample grids: one PNG per look at a generator, columns with titles, one row per pair.

The trainer draws them every log.sample_every epochs on the same fixed pairs, so a folder of
grids shows one generator learning, pair by pair; `keyreid generate render --pose canonical:all`
lays its renders out with the same tiling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from keyreid.generation.pose import from_unit_range
from keyreid.utils.io import atomic_write

GAP = 2                 # pixels between cells
TITLE_HEIGHT = 16       # the band of column titles above the first row
BACKGROUND = (32, 32, 32)
TITLE_COLOUR = (230, 230, 230)


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def sample_grid(columns: dict[str, Tensor | np.ndarray]) -> np.ndarray:
    """uint8 [H, W, 3]: a TITLE_HEIGHT band of column titles, then one row per pair (GAP pixels
    above each row and below the last); see grid_image."""
    return np.asarray(grid_image(columns, titles=True))


def grid_image(columns: dict[str, Tensor | np.ndarray], titles: bool = True) -> Image.Image:
    """columns: name -> [B,3,H,W] in [-1, 1] (tensor) or uint8 [B,H,W,3]; every column the same B
    and H (widths may differ). A column is as wide as its images or its title, whichever is wider
    (images centred), so a title is never cut."""
    if not columns:
        raise ValueError("a sample grid needs at least one column")
    arrays = {}
    for name, col in columns.items():
        arr = from_unit_range(col) if isinstance(col, Tensor) else np.asarray(col)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"column {name!r}: expected [B,3,H,W] in [-1,1] or uint8 [B,H,W,3], "
                             f"got {arr.dtype} {list(arr.shape)}")
        arrays[name] = arr
    rows = {a.shape[0] for a in arrays.values()}
    heights = {a.shape[1] for a in arrays.values()}
    if len(rows) != 1 or len(heights) != 1:
        raise ValueError(f"every column needs the same rows and height; got "
                         f"{ {n: list(a.shape[:2]) for n, a in arrays.items()} }")
    b, h = rows.pop(), heights.pop()
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sizes = {n: _text_size(probe, n, font) for n in arrays} if titles else {n: (0, 0) for n in arrays}
    title_h = TITLE_HEIGHT if titles else 0
    widths = [max(a.shape[2], sizes[n][0] + 2 * GAP) for n, a in arrays.items()]
    total_w = sum(widths) + GAP * (len(widths) + 1)
    total_h = title_h + b * h + GAP * (b + 1)
    canvas = Image.new("RGB", (total_w, total_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = GAP
    for (name, arr), w in zip(arrays.items(), widths):
        if titles:
            draw.text((x + (w - sizes[name][0]) // 2, GAP), name, fill=TITLE_COLOUR, font=font)
        off = x + (w - arr.shape[2]) // 2
        for r in range(b):
            canvas.paste(Image.fromarray(arr[r]), (off, title_h + GAP + r * (h + GAP)))
        x += w + GAP
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PIL image as PNG atomically (a reader never sees half a file)."""
    path = Path(path)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def save_sample_grid(columns: dict[str, Tensor | np.ndarray], path: str | Path, titles: bool = True) -> Path:
    """sample_grid written as a PNG, atomically; returns the path."""
    return save_png(grid_image(columns, titles), path)


__all__ = ["GAP", "TITLE_HEIGHT", "grid_image", "sample_grid", "save_png", "save_sample_grid"]
