"""The one image reader: every file keyreid reads as a picture (extract, embed, search, the
service's uploads, explain, generate render, export --images, datasets check, the keypoint tools)
goes through read_image / to_rgb / image_size, so a file means the same pixels everywhere.

Two things Pillow does not do for us:
- High-bit-depth images (16-bit grey PNG/TIFF opened as I;16*, 32-bit I, float F): Pillow's
  convert("RGB") clips them to 255, so a 16-bit photo turns white. They are scaled to 8 bits.
- Decompression bombs: Pillow only warns between MAX_IMAGE_PIXELS and twice that. Both are
  ImageTooLarge here, found from the header before any pixel is decoded.
And transparent pixels (an alpha band, or a palette / grey / RGB colour marked transparent) are
composited over white, not left as whatever colour the file stores under them.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

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


# what transparent pixels become: the colour a file stores under them is arbitrary (often black);
# white is what an image viewer shows
BACKGROUND = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def _over_background(rgba: Image.Image) -> Image.Image:
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of an opened (loaded) PIL image: high bit depths scaled rather than
    clipped, transparency composited over BACKGROUND, any other mode (CMYK, YCbCr, LAB, HSV, P,
    1-bit) by Pillow's conversion."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(im)
        grey = _to_uint8(values, bits16=mode.startswith("I;16"))
        t = im.info.get("transparency")
        if isinstance(t, (int, float)) and not isinstance(t, bool):  # a 16-bit PNG's tRNS grey level
            alpha = np.where(values == t, 0, 255).astype(np.uint8)
            return _over_background(Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA"))
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "La":  # Pillow converts premultiplied La only to LA
        im, mode = im.convert("LA"), "LA"
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return _over_background(im.convert("RGBA"))
    return im.convert("RGB")


def _too_large(path, error: Exception) -> ImageTooLarge:
    # Pillow's message: "Image size (N pixels) exceeds limit of M pixels, could be ..."
    import re

    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(found.group(1)):,} pixels" if found else "its pixel count"
    return ImageTooLarge(path, f"{pixels} is over the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} "
                               "pixels; refusing to decode it (shrink the image, or raise "
                               "PIL.Image.MAX_IMAGE_PIXELS if you trust it)")


# warnings filters are process-global and catch_warnings is not thread-safe: two threads inside
# it at once (probe_images opens files from threads, the service from its workers) can restore
# each other's filters and drop the "error" one, and a bomb in Pillow's warning range would then
# be decoded. Every open under the filter holds this lock; it covers the header read only.
_OPEN_LOCK = threading.Lock()


def open_image(source, formats: Optional[Sequence[str]] = None, name=None) -> Image.Image:
    """Image.open (lazy: the header only) with Pillow's decompression-bomb warning raised as
    ImageTooLarge naming `name` (default: `source` when it is a path); other errors as Pillow
    raises them. `source`: a path or a binary file object."""
    if name is None and isinstance(source, (str, Path)):
        name = source
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source, formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _too_large(name, e) from None


def _open(path: str) -> Image.Image:
    """open_image of a file; ImageTooLarge / ImageReadError naming it."""
    try:
        return open_image(path)
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
    except Image.DecompressionBombError as e:  # some formats check again per frame, while decoding
        raise _too_large(path, e) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"unreadable or truncated image ({e})") from None


def image_size(path: Union[str, Path]) -> tuple[int, int]:
    """(width, height) from the header alone; ImageReadError / ImageTooLarge as read_image."""
    path = str(path)
    with _open(path) as im:
        return im.size


__all__ = ["BACKGROUND", "ImageReadError", "ImageTooLarge", "image_size", "open_image", "read_image", "to_rgb"]
