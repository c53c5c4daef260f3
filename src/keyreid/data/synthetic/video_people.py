"""People of a video world: who they are, where they walk, and when.

A person walks one polyline path on the ground at a constant speed: along the route (east or
west, on a lane of their own that weaves slowly, so the walking direction keeps turning) from a
route end or a side door to a route end or a side door. Entry times are drawn so that no camera
sees more than about `max_in_view` people at once. What makes tracking hard in real footage
happens here too: some people stop for a few seconds where a camera sees them (a constant-velocity
motion model walks on without them), some turn back half-way, and some walk in pairs a lane
apart at the same pace, so that the two boxes overlap for long stretches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from keyreid.data.synthetic.config import SynthConfig
from keyreid.data.synthetic.identities import sample_attributes, signature
from keyreid.data.synthetic.video_config import VideoConfig
from keyreid.data.synthetic.walk import sample_gait


@dataclass
class PersonState:
    """One person at one instant: what the renderer needs."""

    id: int
    attributes: dict
    gait: dict
    height: float  # metres (one body unit)
    x: float
    z: float
    heading: float  # radians, ground walking direction
    phase: float  # gait phase, radians


@dataclass
class Walker:
    """One identity's walk through the world."""

    id: int
    attributes: dict
    gait: dict
    height: float
    speed: float  # m/s
    t0: float  # seconds: when the walk starts (may lie before the first frame)
    path: np.ndarray  # [K, 2] ground points (x, z)
    entry: str  # "west" | "east" | "door N"
    exit: str
    phase0: float
    pause_at: Optional[float] = None  # metres along the path where the person stands still
    pause_for: float = 0.0  # seconds
    leader: Optional[int] = None  # the id this person walks beside (a pair of friends)

    def __post_init__(self) -> None:
        seg = np.hypot(*np.diff(self.path, axis=0).T)
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])

    @property
    def duration(self) -> float:
        return float(self.cum[-1] / self.speed) + self.pause_for

    def distance(self, t):
        """Metres walked at time(s) t (negative before the start); standing still while paused."""
        s = self.speed * (np.asarray(t, np.float64) - self.t0)
        if self.pause_at is not None:
            s = np.where(s > self.pause_at, np.maximum(self.pause_at, s - self.speed * self.pause_for), s)
        return s

    def where(self, s) -> np.ndarray:
        """Ground point(s) at distance s walked."""
        s = np.clip(s, 0.0, self.cum[-1])
        return np.stack([np.interp(s, self.cum, self.path[:, 0]), np.interp(s, self.cum, self.path[:, 1])], -1)

    def state(self, t: float) -> Optional[PersonState]:
        s = float(self.distance(t))
        if s < 0 or s > self.cum[-1]:
            return None
        (x, z), ahead, behind = self.where(s), self.where(s + 0.3), self.where(s - 0.3)
        d = ahead - behind  # a short chord: the heading turns smoothly round a waypoint
        phase = self.phase0 + 2 * math.pi * s / (self.gait["stride"] * self.height)
        return PersonState(self.id, self.attributes, self.gait, self.height, float(x), float(z),
                           math.atan2(float(d[0]), float(d[1])), phase)

    def to_dict(self) -> dict:
        return {"id": self.id, "attributes": self.attributes, "gait": self.gait, "height": self.height,
                "speed": self.speed, "t0": self.t0, "entry": self.entry, "exit": self.exit,
                "phase0": self.phase0, "pause_at": self.pause_at, "pause_for": self.pause_for, "leader": self.leader,
                "path": np.round(self.path, 3).tolist()}


def _lane_path(rng, x_from: float, x_to: float, half: float) -> np.ndarray:
    lane = rng.uniform(-half + 1.0, half - 1.0)
    amp = min(rng.uniform(0.0, 1.2), half - 0.6 - abs(lane))
    wave, ph = rng.uniform(10, 25), rng.uniform(0, 2 * math.pi)
    n = max(2, int(abs(x_to - x_from) / 0.5) + 1)
    xs = np.linspace(x_from, x_to, n)
    return np.stack([xs, lane + amp * np.sin(2 * math.pi * xs / wave + ph)], -1)


def _path(rng, cfg: VideoConfig, route: tuple[float, float, float], doors: list[tuple[float, float]]):
    """(path, entry, exit) of one walk; doors are (x, side) on the corridor's walls."""
    x_min, x_max, half = route
    direction = 1 if rng.random() < 0.5 else -1
    ends = (x_min, x_max) if direction > 0 else (x_max, x_min)
    start, stop, entry, exit_ = ends[0], ends[1], ("west", "east")[direction < 0], ("east", "west")[direction < 0]
    door_in = door_out = None
    if doors and rng.random() < cfg.door_prob:
        door_in = int(rng.integers(len(doors)))
        start, entry = doors[door_in][0], f"door {door_in + 1}"
    ahead = [k for k, (x, _) in enumerate(doors) if (x - start) * direction > 4.0]
    if ahead and rng.random() < cfg.door_prob:
        door_out = ahead[int(rng.integers(len(ahead)))]
        stop, exit_ = doors[door_out][0], f"door {door_out + 1}"
    turn = rng.random() < cfg.turn_prob
    if turn:  # half-way along they turn back, and leave where they came in
        door_out, stop, exit_ = None, start, entry
    lane_to = ends[1] if turn else stop - (direction if door_out is not None else 0)
    pts = _lane_path(rng, start + (direction if door_in is not None else 0), lane_to, half)
    if turn:
        k = max(2, int(len(pts) * rng.uniform(0.3, 0.7)))
        pts = np.concatenate([pts[:k], pts[:k - 1][::-1]])
    # a door is out in the wall: people step through it and turn onto (or off) their lane
    if door_in is not None:
        step = np.array([[start, doors[door_in][1] * (half + 1.5)]])
        pts = np.concatenate([step, pts] + ([step] if turn else []))
    if door_out is not None:
        pts = np.concatenate([pts, [[stop, doors[door_out][1] * (half + 1.5)]]])
    return pts, entry, exit_


def _inside(w: Walker, grid: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """bool [cameras, times]: where camera c's stretch of route holds walker w at grid time t."""
    s = w.distance(grid)
    x = w.where(s)[:, 0]
    return ((s >= 0) & (s <= w.cum[-1]))[None] & (x[None] >= lo) & (x[None] <= hi)


def plan_people(rng: np.random.Generator, cfg: VideoConfig, route: tuple[float, float, float],
                doors: list[tuple[float, float]], views: list[tuple[float, float]]) -> list[Walker]:
    """Every identity's walk; `views` are the route x-ranges the cameras see (for crowding)."""
    seen: set[str] = set()
    grid = np.arange(0.0, cfg.seconds + 1e-9, 0.5)
    load = np.zeros((len(views), len(grid)))  # people each camera sees at each grid time
    lo = np.array([v[0] for v in views])[:, None]
    hi = np.array([v[1] for v in views])[:, None]
    walkers = []
    for pid in range(1, cfg.identities + 1):
        attrs = sample_attributes(rng, SynthConfig())
        while signature(attrs) in seen:  # every person looks different
            attrs = sample_attributes(rng, SynthConfig())
        seen.add(signature(attrs))
        gait = sample_gait(rng)
        height = round(float(rng.uniform(*cfg.person_height)), 3)
        speed = round(float(rng.uniform(*cfg.speed)), 3)
        leader = walkers[-1] if walkers and rng.random() < cfg.group_prob else None
        if leader is not None and leader.leader is None:  # pairs, not chains
            side = 1.0 if leader.path[:, 1].mean() < 0 else -1.0  # beside the leader, toward the middle
            path = leader.path + np.array([0.0, side * rng.uniform(0.6, 0.9)])
            path[:, 1] = np.clip(path[:, 1], -(route[2] + 1.5), route[2] + 1.5)
            w = Walker(pid, attrs, gait, height, leader.speed, round(leader.t0 + float(rng.uniform(-0.5, 0.5)), 4),
                       path, leader.entry, leader.exit, round(float(rng.uniform(0, 6.2832)), 4),
                       leader.pause_at, leader.pause_for, leader.id)
            load += _inside(w, grid, lo, hi)
            walkers.append(w)
            continue
        path, entry, exit_ = _path(rng, cfg, route, doors)
        w = Walker(pid, attrs, gait, height, speed, 0.0, path, entry, exit_, round(float(rng.uniform(0, 6.2832)), 4))
        if rng.random() < cfg.pause_prob:  # somewhere a camera sees
            xs = w.where(w.cum)[:, 0]
            seen_at = w.cum[((xs[None] >= lo) & (xs[None] <= hi)).any(0)]
            if len(seen_at):
                w.pause_at = round(float(seen_at[int(rng.integers(len(seen_at)))]), 3)
                w.pause_for = round(float(rng.uniform(*cfg.pause_seconds)), 3)
        best = None
        for _ in range(40):  # an entry time that keeps every camera below max_in_view, seen somewhere
            w.t0 = float(rng.uniform(-w.duration + 1.0, cfg.seconds - 1.0))
            inside = _inside(w, grid, lo, hi)
            crowd = float((load + inside).max())
            score = (crowd > cfg.max_in_view, not inside.any(), crowd)
            if best is None or score < best[0]:
                best = (score, w.t0, inside)
            if not score[0] and not score[1]:
                break
        w.t0 = round(best[1], 4)
        load += best[2]
        walkers.append(w)
    return walkers
