"""Pose estimator interface, registry, and the crop geometry shared by the estimators.

An estimator turns a batch of RGB PIL images into keypoints of one skeleton, in pixel-centre
coordinates of each ORIGINAL image (see keyreid.data.keypoints), with a confidence in [0, 1] as the
visibility. It returns None for an image where it finds nobody; the workflow stores that as an
all-zero entry so a resumed run knows the image is done.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from keyreid.data.keypoints import Skeleton
from keyreid.utils.registry import Registry
from keyreid.errors import KeyreidError


class EstimatorUnavailable(KeyreidError):
    """An estimator cannot run here (package missing, model not downloadable); says what to do."""


class PoseEstimator(ABC):
    """Batched keypoint estimator. Subclasses set `name` and `skeleton` and implement estimate."""

    name: str = "estimator"
    skeleton: Skeleton
    batch_size: int = 16  # images handed to estimate() at once by the workflow

    @abstractmethod
    def estimate(self, images: Sequence[Image.Image]) -> list[Optional[np.ndarray]]:
        """Keypoints float32 [K, 3] (x, y, confidence) per image, or None where nobody is found."""

    def close(self) -> None:
        """Release models and threads (the default holds nothing)."""

    def __enter__(self) -> "PoseEstimator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Importing the built-in modules only registers the names; heavy packages load on construction.
ESTIMATORS = Registry("pose estimator", builtin=["keyreid.pose.mediapipe_estimator",
                                                 "keyreid.pose.rtmpose_estimator"])
register_estimator = ESTIMATORS.register


def estimator_names() -> list[str]:
    return ESTIMATORS.names()


def build_estimator(name: str, **kwargs) -> PoseEstimator:
    return ESTIMATORS.build(name, **kwargs)


# --------------------------------------------------------------------------------------------
# Crop geometry: re-ID crops are small (64x128) while estimators expect people of a few hundred
# pixels with some margin, so crops are upscaled and pasted on a padded canvas first.


@dataclass(frozen=True)
class CanvasGeometry:
    """Where an original image lies on the estimator's canvas.

    The original image (w x h pixels) is resized to (scaled_width x scaled_height) and pasted with
    its top-left corner at (offset_x, offset_y) on a canvas_width x canvas_height canvas.
    """

    width: int
    height: int
    scaled_width: int
    scaled_height: int
    offset_x: int
    offset_y: int
    canvas_width: int
    canvas_height: int

    @property
    def scale_x(self) -> float:
        return self.scaled_width / self.width

    @property
    def scale_y(self) -> float:
        return self.scaled_height / self.height

    def to_original(self, xy) -> np.ndarray:
        """Continuous canvas coordinates (0 = left/top edge, as normalised landmarks * canvas size)
        -> pixel-centre coordinates of the original image."""
        xy = np.asarray(xy, dtype=np.float64)
        x = (xy[..., 0] - self.offset_x) / self.scale_x - 0.5
        y = (xy[..., 1] - self.offset_y) / self.scale_y - 0.5
        return np.stack([x, y], axis=-1)

    def to_canvas(self, xy) -> np.ndarray:
        """Inverse of to_original: original pixel-centre -> continuous canvas coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        x = (xy[..., 0] + 0.5) * self.scale_x + self.offset_x
        y = (xy[..., 1] + 0.5) * self.scale_y + self.offset_y
        return np.stack([x, y], axis=-1)

    def inside_original(self, xy) -> np.ndarray:
        """Mask of pixel-centre points inside the original image (half a pixel of slack, as
        validate_keypoints allows)."""
        xy = np.asarray(xy, dtype=np.float64)
        return ((xy[..., 0] >= -0.5) & (xy[..., 1] >= -0.5)
                & (xy[..., 0] <= self.width - 0.5) & (xy[..., 1] <= self.height - 0.5))


def plan_canvas(width: int, height: int, min_long_side: int = 256, square: bool = True,
                margin: float = 0.0) -> CanvasGeometry:
    """Geometry that upscales an image so its long side is at least min_long_side (never
    downscales), then pads it centred onto a canvas: square (side = long side * (1 + 2*margin))
    when `square`, else only `margin` of the long side on each border. min_long_side=0 and
    square=False, margin=0 is the identity."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    long_side = max(width, height)
    s = max(1.0, min_long_side / long_side) if min_long_side else 1.0
    sw, sh = max(1, round(width * s)), max(1, round(height * s))
    pad = round(max(sw, sh) * margin)
    if square:
        cw = ch = max(sw, sh) + 2 * pad
    else:
        cw, ch = sw + 2 * pad, sh + 2 * pad
    return CanvasGeometry(width, height, sw, sh, (cw - sw) // 2, (ch - sh) // 2, cw, ch)


def render_canvas(image: Image.Image, geom: CanvasGeometry,
                  fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Apply plan_canvas's geometry to an RGB image (bicubic upscaling)."""
    if image.size != (geom.width, geom.height):
        raise ValueError(f"image is {image.size}, geometry expects {(geom.width, geom.height)}")
    img = image.convert("RGB")
    if (geom.scaled_width, geom.scaled_height) != image.size:
        img = img.resize((geom.scaled_width, geom.scaled_height), Image.BICUBIC)
    if (geom.canvas_width, geom.canvas_height) == img.size:
        return img
    canvas = Image.new("RGB", (geom.canvas_width, geom.canvas_height), fill)
    canvas.paste(img, (geom.offset_x, geom.offset_y))
    return canvas


def finish_keypoints(xy_original: np.ndarray, confidence: np.ndarray,
                     geom: CanvasGeometry) -> np.ndarray:
    """[K, 3] float32 entry: confidence clipped to [0, 1], zero for points outside the original
    image (estimators happily place joints on the padding) or not finite."""
    xy = np.asarray(xy_original, dtype=np.float64)
    conf = np.clip(np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=0.0), 0.0, 1.0)
    finite = np.isfinite(xy).all(axis=1)
    xy = np.where(finite[:, None], xy, 0.0)
    conf = np.where(finite & geom.inside_original(xy), conf, 0.0)
    return np.concatenate([xy, conf[:, None]], axis=1).astype(np.float32)
