"""Is an estimated COCO-17 skeleton plausible for an upright person in a re-ID crop?

A detector can "find" a person and still return a skeleton that is no use (upside down, one arm
three times the other, all joints in a corner). Without annotations these checks are the cheap
way to tell how many of the detections can be trusted; they are deliberately loose.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from keyreid.data.keypoints import COCO17

_I = COCO17.index
# top to bottom; an upright person has each visible group's mean height below the previous one
_LEVELS = (("head", (_I("nose"), _I("left_eye"), _I("right_eye"), _I("left_ear"), _I("right_ear"))),
           ("shoulders", (_I("left_shoulder"), _I("right_shoulder"))),
           ("hips", (_I("left_hip"), _I("right_hip"))),
           ("knees", (_I("left_knee"), _I("right_knee"))),
           ("ankles", (_I("left_ankle"), _I("right_ankle"))))
# the same segment on both sides: lengths should agree within a factor MAX_SIDE_RATIO
_SEGMENTS = {"upper arm": ("shoulder", "elbow"), "forearm": ("elbow", "wrist"),
             "thigh": ("hip", "knee"), "shin": ("knee", "ankle")}
MAX_SIDE_RATIO = 3.0


def implausible_reason(keypoints: np.ndarray, width: int, height: int,
                       min_confidence: float = 0.5) -> Optional[str]:
    """None when the skeleton passes, else why not. Keypoints [17, 3] in pixel centres of a
    width x height crop; only keypoints with v >= min_confidence count. Checks: at least 4
    such keypoints; head above shoulders above hips above knees above ankles (each level's mean,
    5% of the height slack); no limb longer than the crop's height; left and right upper arm,
    forearm, thigh and shin within a factor 3 of each other."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (COCO17.num_keypoints, 3):
        raise ValueError(f"expected COCO-17 keypoints [17, 3], got {kp.shape}")
    vis = kp[:, 2] >= min_confidence
    if vis.sum() < 4:
        return f"only {int(vis.sum())} keypoint(s) with confidence >= {min_confidence:g}"
    slack = 0.05 * height
    above: Optional[tuple[str, float]] = None
    for name, idx in _LEVELS:
        seen = [i for i in idx if vis[i]]
        if not seen:
            continue
        y = float(kp[seen, 1].mean())
        if above is not None and y < above[1] - slack:
            return f"{name} above {above[0]}"
        above = (name, y)
    for a, b in COCO17.limbs:
        if vis[a] and vis[b] and np.linalg.norm(kp[a, :2] - kp[b, :2]) > height:
            return f"{COCO17.keypoints[a]}-{COCO17.keypoints[b]} longer than the crop"
    for segment, (j0, j1) in _SEGMENTS.items():
        lengths = []
        for side in ("left", "right"):
            a, b = _I(f"{side}_{j0}"), _I(f"{side}_{j1}")
            if vis[a] and vis[b]:
                lengths.append(float(np.linalg.norm(kp[a, :2] - kp[b, :2])))
        if len(lengths) == 2 and min(lengths) > 0.02 * height \
                and max(lengths) > MAX_SIDE_RATIO * min(lengths):
            return f"left and right {segment} differ more than {MAX_SIDE_RATIO:g}x"
    return None


def is_plausible(keypoints: np.ndarray, width: int, height: int,
                 min_confidence: float = 0.5) -> bool:
    return implausible_reason(keypoints, width, height, min_confidence) is None
