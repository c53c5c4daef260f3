"""A video camera on the ground plane (pinhole projection) and the static occluders it sees.

World frame (right-handed): metres, X along the route, Y up, Z across it; the ground is Y = 0
(a camera looking along +Z sees +X on its left). A ground heading angle h points along
(sin h, cos h) in (X, Z). People are drawn by the still
renderer's orthographic body model at the perspective image position and scale of their pelvis:
a body a few metres away spans little depth, so the orthographic body is close to the truth.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

UP = np.array([0.0, 1.0, 0.0])


@dataclass
class VideoCamera:
    """A fixed camera: ground position, mounting height, ground heading and downward pitch of the
    optical axis, focal length in pixels; `wall` is the distance of the backdrop (nothing beyond
    it is seen); `appearance` as cameras.sample_camera (background, gain, cast, blur, noise)."""

    name: str
    x: float
    z: float
    height: float  # metres above the ground
    heading: float  # radians
    elevation: float  # radians, looking down
    focal: float  # pixels
    width: int
    height_px: int
    wall: float  # metres
    appearance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        ce, se = math.cos(self.elevation), math.sin(self.elevation)
        self.forward = np.array([ce * math.sin(self.heading), -se, ce * math.cos(self.heading)])
        self.right = np.cross(self.forward, UP)
        self.right /= np.linalg.norm(self.right)
        self.up = np.cross(self.right, self.forward)
        self.centre = np.array([self.x, self.height, self.z])
        self.cx, self.cy = (self.width - 1) / 2, (self.height_px - 1) / 2  # pixel centres at integers

    def project(self, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points [..., 3] -> (u, v, depth): pixel coordinates and depth along the axis."""
        d = np.asarray(p, dtype=np.float64) - self.centre
        depth = d @ self.forward
        safe = np.where(np.abs(depth) < 1e-6, 1e-6, depth)
        return self.cx + self.focal * (d @ self.right) / safe, self.cy - self.focal * (d @ self.up) / safe, depth

    def ground_distance(self, x, z) -> np.ndarray:
        return np.hypot(np.asarray(x) - self.x, np.asarray(z) - self.z)

    def body_view(self, x: float, z: float, y: float, heading: float) -> tuple[float, float]:
        """(body yaw, elevation) in radians of a body at (x, y, z) walking along `heading`: the yaw
        is the walking direction relative to the ray from the camera (0 = walking toward the
        camera, +90 degrees = walking to the image's right), the elevation the ray's pitch."""
        ray = np.array([x - self.x, 0.0, z - self.z])
        dist = float(np.linalg.norm(ray))
        ray /= max(dist, 1e-9)
        right = np.cross(ray, UP)
        walk = np.array([math.sin(heading), 0.0, math.cos(heading)])
        yaw = math.atan2(float(walk @ right), float(-(walk @ ray)))
        return yaw, math.atan2(self.height - y, dist)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("x", "z", "height", "focal", "wall"):
            d[k] = round(float(d[k]), 4)
        d["heading_deg"] = round(math.degrees(d.pop("heading")), 4)
        d["elevation_deg"] = round(math.degrees(d.pop("elevation")), 4)
        d["image_height"] = d.pop("height_px")
        d["image_width"] = d.pop("width")
        return d


@dataclass
class StaticOccluder:
    """Something standing on the ground (pillar, bench, car), drawn as upright boxes facing the
    camera at the depth of its foot point; `parts` are (left, bottom, right, top) fractions of its
    extent (a car's body and cabin, a bench's seat and back)."""

    kind: str
    x: float
    z: float
    length: float  # metres along `axis`
    thickness: float  # metres across it
    height: float
    axis: float  # radians, ground heading of the long side
    colour: tuple[int, int, int]
    stripes: tuple[int, int, int] | None
    parts: tuple[tuple[float, float, float, float], ...] = ((0.0, 0.0, 1.0, 1.0),)

    def boxes(self, cam: VideoCamera) -> tuple[list[tuple[float, float, float, float]], float]:
        """Output-pixel boxes (x0, y0, x1, y1) of its parts in `cam` and its depth; no boxes when
        it stands behind the camera or beyond the backdrop."""
        u, v, depth = cam.project(np.array([self.x, 0.0, self.z]))
        if depth < 0.5 or cam.ground_distance(self.x, self.z) > cam.wall:
            return [], float(depth)
        ray = np.array([self.x - cam.x, self.z - cam.z]) / max(float(cam.ground_distance(self.x, self.z)), 1e-9)
        along = np.array([math.sin(self.axis), math.cos(self.axis)])
        cos_a = abs(float(ray @ along))
        # the silhouette width of a box seen along the ray
        w = self.length * math.sqrt(max(0.0, 1 - cos_a**2)) + self.thickness * cos_a
        _, v_top, _ = cam.project(np.array([self.x, self.height, self.z]))
        wpx, hpx = cam.focal * w / depth, float(v - v_top)
        left = float(u) - wpx / 2
        out = [(left + a * wpx, float(v) - t * hpx, left + c * wpx, float(v) - b * hpx) for a, b, c, t in self.parts]
        return out, float(depth)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("x", "z", "length", "thickness", "height"):
            d[k] = round(float(d[k]), 4)
        d["axis_deg"] = round(math.degrees(d.pop("axis")), 4)
        d["parts"] = [list(p) for p in self.parts]
        d["colour"] = list(self.colour)
        d["stripes"] = None if self.stripes is None else list(self.stripes)
        return d
