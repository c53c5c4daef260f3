"""Cameras: per-camera settings, the orthographic projection, and each camera's background."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageDraw

from keyreid.data.synthetic.config import PALETTE, SynthConfig, palette_rgb
from keyreid.data.synthetic.poses import rot_x, rot_y


def sample_camera(rng: np.random.Generator, cfg: SynthConfig, camid: int) -> dict:
    n_bg = int(rng.integers(2, 5))
    return {
        "camera": camid,
        "background": cfg.background_styles[int(rng.integers(len(cfg.background_styles)))],
        "background_colours": [int(c) for c in rng.choice(len(PALETTE), n_bg, replace=False)],
        "background_mute": round(float(rng.uniform(*cfg.background_mute)), 4),  # mix toward grey
        "gain": round(float(rng.uniform(*cfg.gain)), 4),
        "cast": [round(float(1 + rng.uniform(-cfg.colour_cast, cfg.colour_cast)), 4) for _ in range(3)],
        "blur": round(float(rng.uniform(*cfg.blur)), 4),
        "noise": round(float(rng.uniform(*cfg.noise)), 4),
        "occlusion": round(float(rng.uniform(*cfg.occlusion_prob)), 4),
        "crop": round(float(rng.uniform(*cfg.crop_prob)), 4),
        "elevation": round(float(rng.uniform(*cfg.elevation_deg)), 4),
        "path_yaw": round(float(rng.uniform(0, 360)), 4),  # people mostly walk along a path
        "scene_seed": int(rng.integers(2**31)),
    }


class Camera:
    """Orthographic projection: body yaw, camera elevation, scale (px per body unit), centre."""

    def __init__(self, yaw: float, elevation: float, scale: float, cx: float, cy: float, ss: int):
        self.r = rot_x(-elevation) @ rot_y(yaw)  # world Z points at the camera
        self.scale, self.cx, self.cy, self.ss = scale, cx, cy, ss

    def view(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(p) @ self.r.T

    def px(self, p: np.ndarray) -> np.ndarray:
        """Output-image pixel coordinates (pixel centres at integers) of body points [..., 3]."""
        v = self.view(p)
        return np.stack([self.cx + self.scale * v[..., 0], self.cy - self.scale * v[..., 1]], -1)

    def depth(self, p: np.ndarray) -> float:
        return float(self.view(p)[..., 2].mean())

    def canvas(self, xy: np.ndarray) -> np.ndarray:
        """Output pixel coordinates -> supersampled canvas coordinates."""
        return (np.asarray(xy) + 0.5) * self.ss - 0.5


def _scene_strip(cam: dict, cfg: SynthConfig) -> Image.Image:
    """A wide background strip for one camera; images crop windows from it."""
    return scene_strip(cam, cfg.width * 4, cfg.height, cfg.supersample)


def scene_strip(cam: dict, width: int, height: int, ss: int) -> Image.Image:
    """The backdrop of a camera (`background`, `background_colours`, `background_mute`,
    `scene_seed` of sample_camera), `width` x `height` output pixels drawn at supersample `ss`;
    the still renderer's strip is 4 image widths wide, the video renderer's one frame wide."""
    rng = np.random.default_rng(cam["scene_seed"])
    w, h = width * ss, height * ss
    mute = cam["background_mute"]

    def col(c):
        return tuple(int(round((1 - mute) * v + mute * 128)) for v in palette_rgb(c))

    cols = cam["background_colours"]
    img = Image.new("RGB", (w, h), col(cols[0]))
    d = ImageDraw.Draw(img)
    style = cam["background"]
    if style == "tiles":  # a wall above a tiled floor
        horizon = int(h * rng.uniform(0.35, 0.6))
        cell = int(rng.integers(8, 20) * ss)
        for y in range(horizon, h, cell):
            for x in range(0, w, cell):
                if ((x // cell) + (y // cell)) % 2:
                    d.rectangle([x, y, x + cell - 1, y + cell - 1], fill=col(cols[1]))
        d.rectangle([0, int(horizon * 0.4), w, int(horizon * 0.4) + 4 * ss], fill=col(cols[-1]))
    elif style == "bands":  # shop fronts / columns
        x = 0
        while x < w:
            bw = int(rng.integers(6, 30) * ss)
            d.rectangle([x, 0, x + bw, h], fill=col(cols[int(rng.integers(len(cols)))]))
            x += bw
    elif style == "bricks":
        bh = int(rng.integers(5, 10) * ss)
        bw = bh * 2 + ss
        for r, y in enumerate(range(0, h, bh)):
            off = (bw // 2) * (r % 2)
            for x in range(-off, w, bw):
                d.rectangle([x + ss, y + ss, x + bw - ss, y + bh - ss],
                            fill=col(cols[1 + int(rng.integers(len(cols) - 1))]))
    elif style == "foliage":  # hedges and trees: many small leaves in the camera's colours
        for _ in range(int(rng.integers(300, 500))):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(1.5, 5) * ss
            d.ellipse([x - r, y - 0.7 * r, x + r, y + 0.7 * r], fill=col(cols[int(rng.integers(len(cols)))]))
    elif style == "glass":  # a glass front: tall panes with frames and bright diagonal glare
        x = 0
        while x < w:
            pw = int(rng.integers(18, 40) * ss)
            d.rectangle([x, 0, x + pw, h], fill=col(cols[int(rng.integers(len(cols)))]))
            for _ in range(int(rng.integers(1, 3))):
                gx = x + rng.uniform(0, pw)
                gw = rng.uniform(2, 6) * ss
                d.polygon([(gx, 0), (gx + gw, 0), (gx + gw - 0.4 * h, h), (gx - 0.4 * h, h)],
                          fill=(230, 235, 240))
            d.rectangle([x, 0, x + 2 * ss, h], fill=col(cols[0]))
            x += pw
    else:  # blobs
        for _ in range(int(rng.integers(25, 45))):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            rw, rh = rng.uniform(4, 24) * ss, rng.uniform(4, 30) * ss
            shape = d.ellipse if rng.random() < 0.5 else d.rectangle
            shape([x - rw, y - rh, x + rw, y + rh], fill=col(cols[int(rng.integers(len(cols)))]))
    return img


_STRIPS: dict = {}  # per process: a camera's strip is the same for every image of it


def background(cam: dict, cfg: SynthConfig, rng: np.random.Generator) -> Image.Image:
    """One image's background (supersampled): a window of the camera's strip, maybe mirrored,
    with per-image clutter. Consumes the image's rng (the first draws of every image)."""
    key = (json.dumps(cam, sort_keys=True), cfg.width, cfg.height, cfg.supersample)
    if key not in _STRIPS:
        if len(_STRIPS) > 64:
            _STRIPS.clear()
        _STRIPS[key] = _scene_strip(cam, cfg)
    strip = _STRIPS[key]
    ss = cfg.supersample
    w = cfg.width * ss
    x0 = int(rng.integers(0, strip.width - w + 1))
    img = strip.crop((x0, 0, x0 + w, strip.height))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    # per-image clutter in full palette colours: poles, boxes, round things
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        c = palette_rgb(int(rng.integers(len(PALETTE))))
        kind = rng.random()
        x, y = rng.uniform(0, w), rng.uniform(0, img.height)
        if kind < 0.35:
            pw = rng.uniform(2, 6) * ss
            d.rectangle([x, 0, x + pw, img.height], fill=c)
        elif kind < 0.7:
            rw, rh = rng.uniform(4, 16) * ss, rng.uniform(4, 16) * ss
            d.rectangle([x - rw, y - rh, x + rw, y + rh], fill=c)
        else:
            r = rng.uniform(3, 10) * ss
            d.ellipse([x - r, y - r, x + r, y + r], fill=c)
    return img
