"""Keypoints as data: skeleton definitions, the sidecar file format, and heatmap rendering.

Coordinates everywhere are pixel coordinates of the original image: x is the column, y the row,
and integer values fall on pixel centres (the convention of COCO, CUB part_locs and the VeRi
keypoint release). Visibility is 0 for a keypoint that is absent or occluded and in (0, 1] for a
visible one (1 for annotations, the detector confidence for estimated keypoints).

Sidecar format (JSON Lines, UTF-8): one header line, then one line per image::

    {"format": "keyreid-keypoints", "version": 1, "skeleton": "coco17"}
    {"path": "bounding_box_train/0002_c1s1_000451_03.jpg", "keypoints": [[x, y, v], ...]}

`path` is relative to the dataset root with forward slashes. Each entry has exactly K rows of
three finite numbers, v in [0, 1]. JSON Lines lets an estimator append as it goes, so a killed
run loses at most its last, half-written line (which `read_sidecar(..., tolerate_truncated_tail=True)`
ignores) and resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from keyreid.errors import DataError
from keyreid.utils.io import atomic_write_text

SIDECAR_FORMAT = "keyreid-keypoints"
SIDECAR_VERSION = 1


@dataclass(frozen=True)
class Skeleton:
    """Named keypoints in a fixed order, their left/right flip pairs and the limbs to draw."""

    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    limbs: tuple[tuple[int, int], ...] = ()

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def flip_permutation(self) -> np.ndarray:
        """Index array p such that flipped_keypoints = keypoints[p] after mirroring x."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def index(self, name: str) -> int:
        return self.keypoints.index(name)


def _pairs(names: tuple[str, ...], pairs: Iterable[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    return tuple((names.index(a), names.index(b)) for a, b in pairs)


_COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
COCO17 = Skeleton(
    name="coco17",
    keypoints=_COCO17,
    flip_pairs=_pairs(_COCO17, [(f"left_{p}", f"right_{p}") for p in
                                ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")]),
    limbs=_pairs(_COCO17, [
        ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
        ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
        ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
        ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
        ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_eye", "right_eye"),
        ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
        ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
    ]),
)

# CUB-200-2011 parts/parts.txt order (part ids 1..15).
_CUB15 = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left_eye", "left_leg", "left_wing",
    "nape", "right_eye", "right_leg", "right_wing", "tail", "throat",
)
CUB15 = Skeleton(
    name="cub15",
    keypoints=_CUB15,
    flip_pairs=_pairs(_CUB15, [("left_eye", "right_eye"), ("left_leg", "right_leg"),
                               ("left_wing", "right_wing")]),
    limbs=_pairs(_CUB15, [
        ("beak", "forehead"), ("forehead", "crown"), ("crown", "nape"), ("nape", "back"),
        ("back", "tail"), ("beak", "throat"), ("throat", "breast"), ("breast", "belly"),
        ("belly", "tail"), ("forehead", "left_eye"), ("forehead", "right_eye"),
        ("back", "left_wing"), ("back", "right_wing"), ("belly", "left_leg"), ("belly", "right_leg"),
    ]),
)

# VeRi-776 keypoint release (Wang et al., ICCV 2017), keypoint ids 1..20 in the release order.
_VERI20 = (
    "left_front_wheel", "left_back_wheel", "right_front_wheel", "right_back_wheel",
    "right_fog_lamp", "left_fog_lamp", "right_headlight", "left_headlight",
    "front_logo", "front_plate", "left_mirror", "right_mirror",
    "right_front_roof", "left_front_roof", "left_back_roof", "right_back_roof",
    "left_rear_lamp", "right_rear_lamp", "rear_logo", "rear_plate",
)
VERI20 = Skeleton(
    name="veri20",
    keypoints=_VERI20,
    flip_pairs=_pairs(_VERI20, [
        ("left_front_wheel", "right_front_wheel"), ("left_back_wheel", "right_back_wheel"),
        ("left_fog_lamp", "right_fog_lamp"), ("left_headlight", "right_headlight"),
        ("left_mirror", "right_mirror"), ("left_front_roof", "right_front_roof"),
        ("left_back_roof", "right_back_roof"), ("left_rear_lamp", "right_rear_lamp"),
    ]),
    limbs=_pairs(_VERI20, [
        ("left_front_wheel", "left_back_wheel"), ("right_front_wheel", "right_back_wheel"),
        ("left_headlight", "right_headlight"), ("left_fog_lamp", "right_fog_lamp"),
        ("left_front_roof", "right_front_roof"), ("left_back_roof", "right_back_roof"),
        ("left_front_roof", "left_back_roof"), ("right_front_roof", "right_back_roof"),
        ("left_rear_lamp", "right_rear_lamp"), ("front_logo", "front_plate"),
        ("rear_logo", "rear_plate"),
    ]),
)

SKELETONS: dict[str, Skeleton] = {s.name: s for s in (COCO17, CUB15, VERI20)}


def get_skeleton(name: str) -> Skeleton:
    try:
        return SKELETONS[name]
    except KeyError:
        raise KeyError(f"unknown skeleton {name!r}; known: {sorted(SKELETONS)}") from None


# --------------------------------------------------------------------------------------------
# Sidecar I/O


def validate_keypoints(kp, num_keypoints: int, where: str,
                       image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Return kp as float32 [K, 3] or raise DataError naming `where` and the problem.

    image_size: (width, height); when given, visible keypoints must lie inside the image
    (with half a pixel of slack for pixel-centre rounding).
    """
    try:
        arr = np.asarray(kp, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(where, "keypoints are not a numeric [K, 3] array") from None
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise DataError(where, f"keypoints must have shape [{num_keypoints}, 3], got {list(arr.shape)}")
    if arr.shape[0] != num_keypoints:
        raise DataError(where, f"expected {num_keypoints} keypoints, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise DataError(where, "keypoints contain NaN or infinite values")
    vis = arr[:, 2]
    if (vis < 0).any() or (vis > 1).any():
        bad = int(np.flatnonzero((vis < 0) | (vis > 1))[0])
        raise DataError(where, f"visibility of keypoint {bad} is {vis[bad]:g}, must be in [0, 1]")
    if image_size is not None:
        w, h = image_size
        visible = vis > 0
        x, y = arr[:, 0], arr[:, 1]
        outside = visible & ((x < -0.5) | (y < -0.5) | (x > w - 0.5) | (y > h - 0.5))
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise DataError(where, f"visible keypoint {i} at ({x[i]:g}, {y[i]:g}) lies outside the "
                                   f"{w}x{h} image")
    return arr.astype(np.float32)


def _header(skeleton: str) -> dict:
    return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "skeleton": skeleton}


def _entry_line(rel_path: str, kp: np.ndarray) -> str:
    rows = [[round(float(x), 3), round(float(y), 3), round(float(v), 4)] for x, y, v in kp]
    return json.dumps({"path": rel_path, "keypoints": rows}, separators=(",", ":"))


def write_sidecar(path: str | Path, skeleton: str | Skeleton,
                  entries: Mapping[str, np.ndarray]) -> None:
    """Write a whole sidecar atomically (temporary file + rename): a reader never sees half."""
    skel = skeleton if isinstance(skeleton, Skeleton) else get_skeleton(skeleton)
    lines = [json.dumps(_header(skel.name))]
    for rel in sorted(entries):
        kp = validate_keypoints(entries[rel], skel.num_keypoints, f"{path} [{rel}]")
        lines.append(_entry_line(rel, kp))
    atomic_write_text(path, "\n".join(lines) + "\n")


class SidecarAppender:
    """Append entries to a sidecar one at a time (for resumable estimation).

    Opens an existing sidecar after checking its header and skeleton, cutting off a half-written
    last line if a previous run was killed mid-write; creates the file otherwise.
    """

    def __init__(self, path: str | Path, skeleton: str | Skeleton):
        self.skeleton = skeleton if isinstance(skeleton, Skeleton) else get_skeleton(skeleton)
        self.path = Path(path)
        self.done: set[str] = set()
        if self.path.exists() and self.path.stat().st_size > 0:
            name, entries = read_sidecar(self.path, tolerate_truncated_tail=True)
            if name != self.skeleton.name:
                raise DataError(self.path, f"sidecar skeleton is {name!r}, expected {self.skeleton.name!r}")
            self.done = set(entries)
            self._truncate_partial_tail()
            self._file = open(self.path, "a", encoding="utf-8")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")
            self._file.write(json.dumps(_header(self.skeleton.name)) + "\n")
            self._file.flush()

    def _truncate_partial_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)

    def append(self, rel_path: str, kp) -> None:
        kp = validate_keypoints(kp, self.skeleton.num_keypoints, f"{self.path} [{rel_path}]")
        if rel_path in self.done:
            return  # never rewrite a finished entry
        self._file.write(_entry_line(rel_path, kp) + "\n")
        self.done.add(rel_path)

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()

    def __enter__(self) -> "SidecarAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_sidecar(path: str | Path, tolerate_truncated_tail: bool = False
                 ) -> tuple[str, dict[str, np.ndarray]]:
    """Read a sidecar; returns (skeleton name, {relative path: float32 [K, 3]}).

    Raises DataError naming the file and line for any malformed content. With
    tolerate_truncated_tail, an unparsable final line without a newline (a killed writer) is
    ignored instead.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "keypoint sidecar not found")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    ends_cleanly = text.endswith("\n")
    if ends_cleanly:
        lines = lines[:-1]
    if not lines or not lines[0].strip():
        raise DataError(path, "empty keypoint sidecar (expected a header line)")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        raise DataError(path, "line 1: header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != SIDECAR_FORMAT:
        raise DataError(path, f"line 1: not a keyreid keypoint sidecar (format must be {SIDECAR_FORMAT!r})")
    if header.get("version") != SIDECAR_VERSION:
        raise DataError(path, f"line 1: unsupported sidecar version {header.get('version')!r}")
    try:
        skel = get_skeleton(header.get("skeleton"))
    except KeyError as e:
        raise DataError(path, f"line 1: {e.args[0]}") from None
    entries: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        last = lineno == len(lines)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if last and not ends_cleanly and tolerate_truncated_tail:
                break
            raise DataError(path, f"line {lineno}: not valid JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("path"), str) or "keypoints" not in obj:
            raise DataError(path, f"line {lineno}: entry needs 'path' (string) and 'keypoints'")
        rel = obj["path"]
        if rel in entries:
            raise DataError(path, f"line {lineno}: duplicate entry for {rel!r}")
        entries[rel] = validate_keypoints(obj["keypoints"], skel.num_keypoints,
                                          f"{path} line {lineno} [{rel}]")
    return skel.name, entries


# --------------------------------------------------------------------------------------------
# Heatmaps


def heatmap_coordinates(xy: np.ndarray, stride: float) -> np.ndarray:
    """Map pixel-centre coordinates of the input image to those of a heatmap at `stride`.

    Cell j of the heatmap covers input pixels [j*stride, (j+1)*stride), whose centre lies at
    j*stride + (stride - 1)/2 in pixel-centre coordinates.
    """
    return (np.asarray(xy, dtype=np.float64) + 0.5) / stride - 0.5


def render_heatmaps(keypoints: np.ndarray, image_size: tuple[int, int], stride: int = 4,
                    sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmaps of keypoints [K, 3] on an image of size (height, width).

    Returns (heatmaps float32 [K, ceil(H/stride), ceil(W/stride)], weights float32 [K]): the peak of
    each visible keypoint's Gaussian is 1 at its location (sigma in heatmap cells); invisible
    keypoints and keypoints outside the image get an all-zero map and weight 0, so a
    visibility-weighted loss ignores them. Weight is the keypoint's visibility otherwise.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    h, w = image_size
    hh, hw = math.ceil(h / stride), math.ceil(w / stride)
    k = kp.shape[0]
    maps = np.zeros((k, hh, hw), dtype=np.float32)
    weights = np.zeros(k, dtype=np.float32)
    inside = (kp[:, 2] > 0) & (kp[:, 0] >= -0.5) & (kp[:, 1] >= -0.5) \
        & (kp[:, 0] <= w - 0.5) & (kp[:, 1] <= h - 0.5)
    if not inside.any():
        return maps, weights
    centres = heatmap_coordinates(kp[:, :2], stride)
    xs = np.arange(hw, dtype=np.float64)
    ys = np.arange(hh, dtype=np.float64)
    for i in np.flatnonzero(inside):
        cx, cy = centres[i]
        gx = np.exp(-((xs - cx) ** 2) / (2 * sigma**2))
        gy = np.exp(-((ys - cy) ** 2) / (2 * sigma**2))
        maps[i] = np.outer(gy, gx).astype(np.float32)
        weights[i] = kp[i, 2]
    return maps, weights
