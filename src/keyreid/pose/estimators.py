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


CANVASES = ("tall", "square", "plain")
FILLS = ("edge", "black")


def plan_canvas(width: int, height: int, min_long_side: int = 256, canvas: str = "square",
                margin: float = 0.0, height_factor: float = 2.0) -> CanvasGeometry:
    """Geometry that upscales an image so its long side is at least min_long_side (never
    downscales; 0 = no upscaling), then centres it on a canvas:

    - "tall": height_factor x the scaled image's height, and half as wide (at least the
      image's width): a re-ID crop gets room above and below, as a person in a street scene;
    - "square": side = long side * (1 + 2 * margin);
    - "plain": `margin` of the long side on each border.

    "plain" with margin 0 and min_long_side 0 is the identity.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if canvas not in CANVASES:
        raise ValueError(f"canvas must be one of {', '.join(CANVASES)}, got {canvas!r}")
    if margin < 0 or height_factor < 1:
        raise ValueError(f"need margin >= 0 and height_factor >= 1, got {margin}, {height_factor}")
    long_side = max(width, height)
    s = max(1.0, min_long_side / long_side) if min_long_side else 1.0
    sw, sh = max(1, round(width * s)), max(1, round(height * s))
    pad = round(max(sw, sh) * margin)
    if canvas == "tall":
        ch = max(sh, round(sh * height_factor))
        cw = max(sw, round(ch / 2))
    elif canvas == "square":
        cw = ch = max(sw, sh) + 2 * pad
    else:
        cw, ch = sw + 2 * pad, sh + 2 * pad
    return CanvasGeometry(width, height, sw, sh, (cw - sw) // 2, (ch - sh) // 2, cw, ch)


def render_canvas(image: Image.Image, geom: CanvasGeometry, fill: str = "black") -> Image.Image:
    """Apply plan_canvas's geometry to an RGB image (bicubic upscaling). fill: "black" padding,
    or "edge", which repeats the border pixels outwards (no hard black frame around the person,
    which BlazePose's person detector takes badly)."""
    if image.size != (geom.width, geom.height):
        raise ValueError(f"image is {image.size}, geometry expects {(geom.width, geom.height)}")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    img = image.convert("RGB")
    if (geom.scaled_width, geom.scaled_height) != image.size:
        img = img.resize((geom.scaled_width, geom.scaled_height), Image.BICUBIC)
    if (geom.canvas_width, geom.canvas_height) == img.size:
        return img
    pad_x = (geom.offset_x, geom.canvas_width - geom.scaled_width - geom.offset_x)
    pad_y = (geom.offset_y, geom.canvas_height - geom.scaled_height - geom.offset_y)
    mode = "edge" if fill == "edge" else "constant"
    return Image.fromarray(np.pad(np.asarray(img), (pad_y, pad_x, (0, 0)), mode=mode))


@dataclass(frozen=True)
class Preprocess:
    """How a crop is laid out before the estimator sees it (see plan_canvas, render_canvas)."""

    canvas: str = "tall"
    fill: str = "edge"
    min_long_side: int = 256
    margin: float = 0.25  # square and plain canvases
    height_factor: float = 2.0  # tall canvas

    def __post_init__(self):
        try:  # a user can reach these through --margin and friends: one clear line
            plan_canvas(64, 128, self.min_long_side, self.canvas, self.margin, self.height_factor)
            if self.fill not in FILLS:
                raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {self.fill!r}")
        except ValueError as e:
            raise KeyreidError(f"preprocessing: {e}") from None

    def geometry(self, width: int, height: int) -> CanvasGeometry:
        return plan_canvas(width, height, self.min_long_side, self.canvas, self.margin,
                           self.height_factor)

    def apply(self, image: Image.Image) -> tuple[Image.Image, CanvasGeometry]:
        geom = self.geometry(*image.size)
        return render_canvas(image, geom, self.fill), geom


# Named layouts for the command line. "tall-edge" is the default since it finds a person in far
# more real re-ID crops (bench/keypoints_real.py); "square-black" was the default before.
PREPROCESS = {
    "tall-edge": Preprocess(),
    "square-black": Preprocess(canvas="square", fill="black"),
    "square-edge": Preprocess(canvas="square", fill="edge"),
    "tall-black": Preprocess(canvas="tall", fill="black"),
    "tall-edge-1.5": Preprocess(height_factor=1.5),  # the default retry
    "crop": Preprocess(canvas="plain", fill="black", min_long_side=256, margin=0.0),
    "raw": Preprocess(canvas="plain", fill="black", min_long_side=0, margin=0.0),
}


def get_preprocess(spec: "str | Preprocess") -> Preprocess:
    if isinstance(spec, Preprocess):
        return spec
    try:
        return PREPROCESS[spec]
    except KeyError:
        raise KeyreidError(f"unknown preprocessing {spec!r}; choose one of "
                           f"{', '.join(PREPROCESS)}") from None


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
