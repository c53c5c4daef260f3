"""The one image reader: every file keyreid reads as a picture (extract, embed, search, the
service's uploads, explain, generate render, export --images, datasets check, the keypoint tools)
goes through read_image / to_rgb / image_size, so a file means the same pixels everywhere.

Two things Pillow does not do for us:
- High-bit-depth images (16-bit grey PNG/TIFF opened as I;16*, 32-bit I, float F): Pillow's
  convert("RGB") clips them to 255, so a 16-bit photo turns white. They are scaled to 8 bits.
- Decompression bombs: Pillow only warns between MAX_IMAGE_PIXELS and twice that. Both are
  ImageTooLarge here, found from the header before any pixel is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from keyreid.errors import ImageError, ImageTooLarge


class ImageReadError(ImageError):
    """An image file that cannot be read (missing, not an image, truncated)."""


def _to_uint8(values: np.ndarray, bits16: bool) -> np.ndarray:
    """Grey values to 0..255: 16-bit data by /257 (65535 -> 255, 32768 -> 128), data already in
    0..255 as it is, floats in 0..1 by x255, anything else by its own range."""
    v = values.astype(np.float64)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if bits16 or (lo >= 0 and 255 < hi <= 65535 and values.dtype.kind in "iu"):
        return np.floor(v / 257 + 0.5).clip(0, 255).astype(np.uint8)
    if values.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return np.floor(v * 255 + 0.5).astype(np.uint8)
    if lo >= 0 and hi <= 255:
        return np.floor(v + 0.5).astype(np.uint8)
    span = hi - lo if hi > lo else 1.0
    return np.floor((v - lo) / span * 255 + 0.5).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """An RGB copy of an opened (loaded) PIL image, high bit depths scaled rather than clipped."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        grey = _to_uint8(np.asarray(im), bits16=im.mode.startswith("I;16"))
        return Image.fromarray(grey, "L").convert("RGB")
    return im.convert("RGB")


def _too_large(path, error: Exception) -> ImageTooLarge:
    # Pillow's message: "Image size (N pixels) exceeds limit of M pixels, could be ..."
    import re

    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(found.group(1)):,} pixels" if found else "its pixel count"
    return ImageTooLarge(path, f"{pixels} is over the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} "
                               "pixels; refusing to decode it (shrink the image, or raise "
                               "PIL.Image.MAX_IMAGE_PIXELS if you trust it)")


def _open(path: str) -> Image.Image:
    """Image.open with Pillow's bomb warning as an error; ImageTooLarge / ImageReadError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _too_large(path, e) from None
    except FileNotFoundError:
        raise ImageReadError(path, "image file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"unreadable or truncated image ({e})") from None


def read_image(path: Union[str, Path]) -> Image.Image:
    """Open and fully decode an image as RGB, or raise ImageReadError / ImageTooLarge naming the
    file and the problem."""
    path = str(path)
    im = _open(path)
    try:
        with im:
            im.load()  # decode now: a truncated file fails here, not in a worker later
            return to_rgb(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"unreadable or truncated image ({e})") from None


def image_size(path: Union[str, Path]) -> tuple[int, int]:
    """(width, height) from the header alone; ImageReadError / ImageTooLarge as read_image."""
    path = str(path)
    with _open(path) as im:
        return im.size


__all__ = ["ImageReadError", "ImageTooLarge", "image_size", "read_image", "to_rgb"]
