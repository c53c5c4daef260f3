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
    """

    path: str
    pid: int
    camid: int
    split: str
    keypoints: Optional[np.ndarray] = None
    bbox: Optional[tuple[float, float, float, float]] = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"{self.path}: split must be one of {SPLITS}, got {self.split!r}")
        if self.keypoints is not None:
            kp = np.asarray(self.keypoints, dtype=np.float32)
            if kp.ndim != 2 or kp.shape[1] != 3:
                raise ValueError(f"{self.path}: keypoints must have shape [K, 3], got {kp.shape}")
            self.keypoints = kp
