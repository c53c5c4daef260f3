"""The video world: a straight pedestrian route with cameras along it, static occluders and
people, all a pure function of the VideoConfig (seeded).

The route is a corridor along X (|Z| <= ROUTE_HALF). Site 1 is a plaza that cameras c1 and c2
watch from different directions (overlapping views); every further camera watches its own
stretch further east, placed so that walking from one field of view to the next takes
`transit_seconds` at a typical pace, unseen. Side doors open onto the plaza and onto the unseen
gaps, so some people appear or vanish between cameras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from keyreid.data.synthetic.cameras import sample_camera
from keyreid.data.synthetic.config import PALETTE, SynthConfig, palette_rgb
from keyreid.data.synthetic.video_camera import StaticOccluder, VideoCamera
from keyreid.data.synthetic.video_config import VideoConfig
from keyreid.data.synthetic.video_people import PersonState, Walker, plan_people

ROUTE_HALF = 4.0  # metres: half the corridor's width
TYPICAL_SPEED = 1.25  # m/s: turns transit_seconds into the unseen distance between views


@dataclass
class World:
    cfg: VideoConfig
    cameras: list[VideoCamera]
    occluders: list[StaticOccluder]
    walkers: list[Walker]
    route: tuple[float, float, float]  # x_min, x_max, half width
    doors: list[tuple[float, float]]  # (x, side): side -1 = south wall, +1 = north wall
    views: list[tuple[float, float]]  # per camera: the route x-range it sees

    def states(self, t: float) -> list[PersonState]:
        """Everybody on the route at time t (seconds), by id."""
        return [s for s in (w.state(t) for w in self.walkers) if s is not None]

    def overlaps(self) -> list[list[str]]:
        """Camera pairs whose fields of view share a stretch of the route."""
        out = []
        for i, a in enumerate(self.views):
            for j in range(i + 1, len(self.views)):
                b = self.views[j]
                if min(a[1], b[1]) - max(a[0], b[0]) > 1.0:
                    out.append([self.cameras[i].name, self.cameras[j].name])
        return out


def view_range(cam: VideoCamera, half: float = ROUTE_HALF) -> tuple[float, float]:
    """The route x-range where a person's pelvis shows in the frame (before the backdrop)."""
    xs, zs = np.meshgrid(np.arange(cam.x - 80, cam.x + 80, 0.25), np.linspace(-half, half, 9))
    pts = np.stack([xs, np.full_like(xs, 0.9), zs], -1)
    u, v, depth = cam.project(pts)
    ok = ((depth > 1.0) & (u >= 0) & (u <= cam.width - 1) & (v >= 0) & (v <= cam.height_px - 1)
          & (cam.ground_distance(xs, zs) < cam.wall))
    if not ok.any():
        return (cam.x, cam.x)
    return float(xs[ok].min()), float(xs[ok].max())


def _camera(rng, cfg: VideoConfig, name: str, target_x: float, look: float) -> VideoCamera:
    """A camera looking at the route's centre line at `target_x` along ground direction `look`
    (radians from +X toward +Z)."""
    dist = rng.uniform(7.0, 11.0)
    mount = rng.uniform(3.0, 5.5)
    hfov = math.radians(rng.uniform(50, 65))
    ux, uz = math.cos(look), math.sin(look)
    x, z = target_x - dist * ux, -dist * uz
    # the far wall of the corridor, seen along the axis, and a little of the ground beyond it
    wall = dist + ROUTE_HALF / max(abs(uz), 0.3) + rng.uniform(2.0, 6.0)
    appearance = sample_camera(rng, SynthConfig(gain=cfg.gain, colour_cast=cfg.colour_cast, blur=cfg.blur,
                                                noise=cfg.noise), int(name[1:]))
    keep = ("background", "background_colours", "background_mute", "gain", "cast", "blur", "noise", "scene_seed")
    return VideoCamera(name, round(x, 4), round(z, 4), round(mount, 4), math.atan2(ux, uz),
                       math.atan2(mount - 0.9, dist), (cfg.width / 2) / math.tan(hfov / 2), cfg.width, cfg.height,
                       round(wall, 4), {k: appearance[k] for k in keep})


def _occluders(rng, cfg: VideoConfig, cam: VideoCamera, span: tuple[float, float]) -> list[StaticOccluder]:
    """A few things standing at the corridor's edges inside this camera's view (pillars, benches,
    cars, kiosks); the near edge's hide people walking behind them, the far edge's are hidden by
    people in front."""
    out = []
    near_side = 1.0 if cam.z > 0 else -1.0
    for _ in range(int(rng.integers(cfg.occluders[0], cfg.occluders[1] + 1))):
        kind = ("pillar", "bench", "car", "kiosk")[int(rng.choice(4, p=[0.35, 0.25, 0.2, 0.2]))]
        side = near_side if rng.random() < 0.6 else -near_side
        x = rng.uniform(span[0] + 1.5, max(span[0] + 1.5, span[1] - 1.5))
        colour = palette_rgb(int(rng.integers(len(PALETTE))))
        stripes = palette_rgb(int(rng.integers(len(PALETTE)))) if rng.random() < 0.35 else None
        if kind == "pillar":
            dims, parts = (rng.uniform(0.45, 0.8), 0.5, 3.2), ((0.0, 0.0, 1.0, 1.0),)
        elif kind == "bench":
            dims, parts = (rng.uniform(1.5, 2.2), 0.6, 0.9), ((0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0))
        elif kind == "car":  # body and cabin
            dims, parts = (rng.uniform(3.8, 4.6), 1.8, 1.5), ((0.0, 0.0, 1.0, 0.6), (0.2, 0.6, 0.8, 1.0))
        else:  # a kiosk or a billboard: wide and taller than a person, it hides them for seconds
            dims, parts = (rng.uniform(1.5, 2.8), 1.0, 2.4), ((0.0, 0.0, 1.0, 1.0),)
        z = side * (ROUTE_HALF + 0.2 + dims[1] / 2 + rng.uniform(0.0, 0.8))
        out.append(StaticOccluder(kind, round(float(x), 4), round(float(z), 4), round(float(dims[0]), 4), dims[1],
                                  dims[2], 0.0, colour, stripes, parts))
    return out


def build_world(cfg: VideoConfig) -> World:
    """The whole world from the config's seed (the same world in every worker process)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
    cameras, views = [], []
    a1 = math.radians(rng.uniform(35, 80))
    plaza_looks = [a1, a1 + math.pi + math.radians(rng.uniform(-40, 40))]  # from the south, then the north
    for k in range(min(2, cfg.cameras)):
        cam = _camera(rng, cfg, f"c{k + 1}", 0.0, plaza_looks[k])
        cameras.append(cam)
        views.append(view_range(cam))
    seen_to = max(v[1] for v in views)
    for k in range(2, cfg.cameras):
        look = math.radians(rng.uniform(40, 90)) * (1 if rng.random() < 0.5 else -1)
        if rng.random() < 0.5:
            look = math.pi - look  # looking west instead of east
        probe = _camera(rng, cfg, f"c{k + 1}", 0.0, look)
        lo, hi = view_range(probe)
        gap = rng.uniform(*cfg.transit_seconds) * TYPICAL_SPEED + 1.0  # + a body width: wholly unseen
        shift = seen_to + gap - lo
        cam = VideoCamera(probe.name, round(probe.x + shift, 4), probe.z, probe.height, probe.heading,
                          probe.elevation, probe.focal, probe.width, probe.height_px, probe.wall, probe.appearance)
        cameras.append(cam)
        views.append((lo + shift, hi + shift))
        seen_to = hi + shift
    x_min, x_max = min(v[0] for v in views) - 6.0, max(v[1] for v in views) + 6.0
    route = (round(x_min, 4), round(x_max, 4), ROUTE_HALF)
    # a door onto the plaza, and one in every unseen gap
    doors = [(round(float(rng.uniform(views[0][0] + 2, max(views[0][0] + 2, views[0][1] - 2))), 4),
              1.0 if rng.random() < 0.5 else -1.0)]
    seen = sorted(views)
    reach = seen[0][1]
    for lo, hi in seen[1:]:
        if lo - reach > 2.0:
            doors.append((round((reach + lo) / 2, 4), 1.0 if rng.random() < 0.5 else -1.0))
        reach = max(reach, hi)
    occluders = [o for cam, span in zip(cameras, views) for o in _occluders(rng, cfg, cam, span)]
    walkers = plan_people(rng, cfg, route, doors, views)
    return World(cfg, cameras, occluders, walkers, route, doors, views)
