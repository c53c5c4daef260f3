"""The one record every dataset adapter produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

SPLITS = ("train", "query", "gallery")


@dataclass
class Sample:
    """One image of a dataset.

    keypoints: float32 array [K, 3] of (x, y, visibility) in pixel coordinates of the original
    image (x = column, y = row, integer values at pixel centres); visibility 0 marks a keypoint
    that is absent or occluded, values in (0, 1] are a visibility or detector confidence.
    bbox: (x, y, w, h) in pixels of the original image, or None.
    camid: the camera id the evaluation protocol compares (adapters of Market-style names store
    the file's camera minus one, as torchreid does; only equality matters to the protocol).
    camera: the camera as the file name writes it (``0301_c2s1_...`` -> 2) when it differs from
    camid; what users see and type (README "Cameras"); read it with `named_camera`.
    """

    path: str
    pid: int
    camid: int
    split: str
    keypoints: Optional[np.ndarray] = None
    bbox: Optional[tuple[float, float, float, float]] = None
    meta: dict = field(default_factory=dict)
    camera: Optional[int] = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"{self.path}: split must be one of {SPLITS}, got {self.split!r}")
        if self.keypoints is not None:
            kp = np.asarray(self.keypoints, dtype=np.float32)
            if kp.ndim != 2 or kp.shape[1] != 3:
                raise ValueError(f"{self.path}: keypoints must have shape [K, 3], got {kp.shape}")
            self.keypoints = kp


def named_camera(sample) -> Optional[int]:
    """The camera of `sample` as its file name writes it (README "Cameras"): Sample.camera, else
    camid; None for images without camera information (the folder adapter's meta["camera_known"]
    False, whose camid is a protocol stand-in)."""
    meta = getattr(sample, "meta", None) or {}
    if meta.get("camera_known") is False:
        return None
    camera = getattr(sample, "camera", None)
    return sample.camid if camera is None else camera


def camera_label(camera: Optional[int]) -> str:
    """How a camera is shown to users (README "Cameras"): "c2" for camera 2, "" when unknown."""
    return "" if camera is None else f"c{camera}"
