"""Detections made from the ground truth, with the noise of a real person detector: jittered
boxes, misses that grow with occlusion (and for tiny people), false positives on the background
and on parts of people, and a confidence that falls with visibility."""

from __future__ import annotations

import math

import numpy as np

from keyreid.data.synthetic.video_config import VideoConfig


def miss_probability(visibility: float, box_height: float, cfg: VideoConfig) -> float:
    p = cfg.det_miss_base + cfg.det_miss_occlusion * (1.0 - visibility) ** 2
    if box_height < cfg.det_min_height:
        p = max(p, 0.5)
    return min(1.0, p)


def _clip(box, width: int, height: int):
    l, t, r, b = box
    l, r = max(l, -0.5), min(r, width - 0.5)
    t, b = max(t, -0.5), min(b, height - 0.5)
    return (l, t, r, b) if r - l >= 2 and b - t >= 2 else None


def make_detections(gt: list[tuple], frames: int, cfg: VideoConfig, rng: np.random.Generator,
                    width: int, height: int) -> tuple[list[tuple], list[int]]:
    """gt: (frame, id, x0, y0, x1, y1, visibility) rows, boxes in output pixels (pixel centres at
    integers), sorted by frame then id. Returns detections (frame, x0, y0, x1, y1, conf), sorted
    by frame then x0, and for each the index of the gt row it came from (-1: a false positive)."""
    by_frame: dict[int, list[int]] = {}
    for i, row in enumerate(gt):
        by_frame.setdefault(row[0], []).append(i)
    dets: list[tuple] = []
    src: list[int] = []
    for i, (frame, _, l, t, r, b, vis) in enumerate(gt):
        w, h = r - l, b - t
        if rng.random() < miss_probability(vis, h, cfg):
            continue
        j = cfg.det_jitter
        cx, cy = (l + r) / 2 + rng.normal(0, j * w), (t + b) / 2 + rng.normal(0, j * h)
        w, h = w * math.exp(rng.normal(0, j)), h * math.exp(rng.normal(0, j))
        conf = float(np.clip(0.25 + 0.7 * vis + rng.normal(0, 0.08), 0.01, 1.0))
        box = _clip((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), width, height)
        if box is not None:
            dets.append((frame, *box, conf))
            src.append(i)
    for frame in range(1, frames + 1):
        people = by_frame.get(frame, [])
        for _ in range(int(rng.poisson(cfg.det_false_positives))):
            if people and rng.random() < cfg.det_partial_fraction:  # a piece of a person, or beside one
                _, _, l, t, r, b, _ = gt[people[int(rng.integers(len(people)))]]
                w, h = r - l, b - t
                kind = int(rng.integers(3))
                if kind == 0:  # head and shoulders
                    box = (l, t, r, t + rng.uniform(0.3, 0.5) * h)
                elif kind == 1:  # legs
                    box = (l, t + rng.uniform(0.45, 0.6) * h, r, b)
                else:  # half a person and the background beside
                    dx = rng.choice([-1, 1]) * rng.uniform(0.5, 0.8) * w
                    box = (l + dx, t, r + dx, b)
                conf = float(rng.uniform(0.05, 0.5))
            else:  # a person-shaped patch of background
                h = rng.uniform(0.12, 0.5) * height
                w = h * rng.uniform(0.3, 0.5)
                x, y = rng.uniform(-0.5, width - 0.5 - w), rng.uniform(-0.5, height - 0.5 - h)
                box = (x, y, x + w, y + h)
                conf = float(rng.uniform(0.02, 0.45))
            box = _clip(box, width, height)
            if box is not None:
                dets.append((frame, *box, conf))
                src.append(-1)
    order = sorted(range(len(dets)), key=lambda k: (dets[k][0], dets[k][1], dets[k][2]))
    return [dets[k] for k in order], [src[k] for k in order]
