"""Synthetic articulated people in the Market-1501 layout, with COCO-17 keypoints.

What identifies a person here is WHICH body part carries WHICH colour and texture (plus a few
accessories attached to keypoints), never which colours appear: every identity dresses its seven
parts in seven different colours of one shared eight-colour palette, so every colour is used by
every part equally often over the population and every person shows almost the same set of colours.
Backgrounds, occluders and clutter use the same palette. A random 3D pose (gait phase, joint angles,
body yaw over the full circle, camera elevation, scale and translation jitter) is projected
orthographically, so pixel positions and global colour statistics carry little identity; comparing
the same body part with the same body part does.

Layout written under OUT::

    bounding_box_train/PPPP_cCs1_FFFFFF_00.jpg    training identities
    query/PPPP_cCs1_FFFFFF_00.jpg                 one image per test identity per camera it is seen in
    bounding_box_test/...                         the other test images, distractors (pid 0000)
                                                  and junk (pid -1, readers drop them)
    keypoints.jsonl                               COCO-17 sidecar (keyreid.data.keypoints format)
    synth.json                                    config, palette, cameras, true attributes
    .keyreid-synth                                marker: `overwrite` replaces only folders with it

Keypoint visibility: 1 for a keypoint inside the image and not under an occluder; 0 for one outside
the image, under an occluder box, or a face keypoint on the far side of the head (nose and eyes of a
person facing away, the far ear in profile). Body joints hidden by the body itself stay 1, as COCO
annotators label them; their coordinates are always the projected joint position.

Every image is rendered from its own seed (derived from the dataset seed and the image index), so
the output is byte-identical for the same config whatever the number of worker processes.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from keyreid.data.keypoints import COCO17, write_sidecar

SYNTH_FORMAT = "keyreid-synth"
SYNTH_VERSION = 1
MARKER = ".keyreid-synth"  # keyreid's own mark on a folder it generated: only such folders are overwritten

# One shared palette for clothes, accessories, occluders and backgrounds.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (35, 35, 40)),
    ("white", (235, 235, 230)),
    ("red", (200, 35, 40)),
    ("yellow", (235, 205, 45)),
    ("green", (40, 150, 65)),
    ("blue", (40, 75, 195)),
    ("purple", (130, 60, 165)),
    ("orange", (235, 125, 30)),
)
SKIN = (222, 176, 140)  # one skin tone for everybody: skin is not an identity cue here
PARTS = ("hair", "torso", "upper_arms", "lower_arms", "thighs", "shins", "shoes")
TEXTURED_PARTS = ("torso", "upper_arms", "lower_arms", "thighs", "shins")
TEXTURES = ("solid", "stripes", "dots", "checks")
SIDES = ("left", "right")
BACKGROUND_STYLES = ("tiles", "bands", "blobs", "bricks")
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


@dataclass
class SynthConfig:
    """Everything that decides the generated set; saved in synth.json. Ranges are inclusive."""

    train_identities: int = 300
    test_identities: int = 300
    cameras: int = 6
    seed: int = 0
    height: int = 128
    width: int = 64
    train_images: tuple[int, int] = (6, 10)  # images per training identity
    train_cameras: tuple[int, int] = (2, 6)  # cameras a training identity is seen in (<= cameras)
    test_cameras: tuple[int, int] = (2, 6)  # cameras a test identity is seen in (>= 2)
    test_images_per_camera: tuple[int, int] = (2, 3)  # one becomes the query, the rest gallery
    distractors: int = 500  # gallery images with pid 0
    clutter_fraction: float = 0.25  # of the distractors: no person, only clutter
    junk: int = 60  # gallery images with pid -1 (bad detections)
    texture_probs: tuple[float, float, float, float] = (0.4, 0.2, 0.2, 0.2)  # TEXTURES order
    hat_prob: float = 0.3
    bag_prob: float = 0.35
    band_prob: float = 0.3
    occlusion_prob: tuple[float, float] = (0.05, 0.3)  # per camera: chance of an occluder box
    crop_prob: tuple[float, float] = (0.0, 0.15)  # per camera: chance the person is cut by the frame
    gain: tuple[float, float] = (0.7, 1.25)  # per camera brightness
    colour_cast: float = 0.12  # per camera, per channel multiplier in 1 +- this
    blur: tuple[float, float] = (0.0, 1.0)  # per camera Gaussian blur radius (output pixels)
    noise: tuple[float, float] = (1.0, 4.0)  # per camera pixel noise std (0..255 scale)
    elevation_deg: tuple[float, float] = (0.0, 20.0)  # per camera: looking down on people
    path_fraction: float = 0.7  # chance a person walks along the camera's main path direction
    person_height: tuple[float, float] = (0.8, 0.95)  # of the image height
    shift: tuple[float, float] = (0.08, 0.05)  # max centre jitter, fraction of (width, height)
    supersample: int = 2  # render at this factor and box-downsample (anti-aliasing); 1 = off
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML / JSON give lists; keep tuples so the config is hashable
            v = getattr(self, f.name)
            if isinstance(v, list):
                setattr(self, f.name, tuple(v))
        if not 2 <= self.cameras <= 9:  # Market names hold one camera digit
            raise ValueError("cameras must be in 2..9 (queries are matched across cameras)")
        if self.train_identities < 1 or self.test_identities < 1:
            raise ValueError("need at least one training and one test identity")
        if self.train_identities + self.test_identities > 9999:
            raise ValueError("at most 9999 identities fit the 4-digit Market pid")
        if self.test_cameras[0] < 2:
            raise ValueError("test identities must be seen in >= 2 cameras")
        if self.test_images_per_camera[0] < 2:
            raise ValueError("test_images_per_camera must start at >= 2 (one query + gallery)")
        if len(PALETTE) < len(PARTS):
            raise ValueError("palette must have at least one colour per part")
        if abs(sum(self.texture_probs) - 1.0) > 1e-6 or len(self.texture_probs) != len(TEXTURES):
            raise ValueError(f"texture_probs must be {len(TEXTURES)} probabilities summing to 1")
        if self.supersample < 1:
            raise ValueError("supersample must be >= 1")

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------------------------
# Identities (part-level appearance)


def sample_attributes(rng: np.random.Generator, cfg: SynthConfig) -> dict:
    """One person's appearance: per part colour/texture/second colour, plus accessories.

    Primary colours are a random injection of the parts into the palette, so each person uses
    distinct colours and all colours are equally frequent on every part.
    """
    perm = rng.permutation(len(PALETTE))
    parts = {}
    for k, part in enumerate(PARTS):
        colour = int(perm[k])
        texture = "solid"
        if part in TEXTURED_PARTS:
            texture = TEXTURES[int(rng.choice(len(TEXTURES), p=cfg.texture_probs))]
        colour2 = None
        if texture != "solid":
            colour2 = int(rng.choice([c for c in range(len(PALETTE)) if c != colour]))
        parts[part] = {"colour": colour, "texture": texture, "colour2": colour2}
    acc = {"hat": None, "bag": None, "band": None}
    if rng.random() < cfg.hat_prob:
        acc["hat"] = {"colour": int(rng.integers(len(PALETTE)))}
    if rng.random() < cfg.bag_prob:  # worn at one hip
        acc["bag"] = {"side": SIDES[int(rng.integers(2))], "colour": int(rng.integers(len(PALETTE)))}
    if rng.random() < cfg.band_prob:  # worn at one wrist
        acc["band"] = {"side": SIDES[int(rng.integers(2))], "colour": int(rng.integers(len(PALETTE)))}
    return {"parts": parts, "accessories": acc}


def _signature(attrs: dict) -> str:
    return json.dumps(attrs, sort_keys=True)


def attribute_vector(attrs: Optional[dict]) -> np.ndarray:
    """One-hot encoding of true attributes (the oracle embedding); zeros for no person.

    Per part: colour (P), texture (4), second colour (P, zero when solid); per accessory: colour
    (P) and, for bag and band, side (2).
    """
    P = len(PALETTE)
    chunks = []
    for part in PARTS:
        a = None if attrs is None else attrs["parts"][part]
        c, t, c2 = np.zeros(P), np.zeros(len(TEXTURES)), np.zeros(P)
        if a is not None:
            c[a["colour"]] = 1
            t[TEXTURES.index(a["texture"])] = 1
            if a["colour2"] is not None:
                c2[a["colour2"]] = 1
        chunks += [c, t, c2]
    for name in ("hat", "bag", "band"):
        a = None if attrs is None else attrs["accessories"][name]
        c, s = np.zeros(P), np.zeros(2)
        if a is not None:
            c[a["colour"]] = 1
            if "side" in a:
                s[SIDES.index(a["side"])] = 1
        chunks += [c] if name == "hat" else [c, s]
    return np.concatenate(chunks).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Cameras


def sample_camera(rng: np.random.Generator, cfg: SynthConfig, camid: int) -> dict:
    n_bg = int(rng.integers(2, 5))
    return {
        "camera": camid,
        "background": BACKGROUND_STYLES[int(rng.integers(len(BACKGROUND_STYLES)))],
        "background_colours": [int(c) for c in rng.choice(len(PALETTE), n_bg, replace=False)],
        "background_mute": round(float(rng.uniform(0.15, 0.45)), 4),  # mix toward grey
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


# --------------------------------------------------------------------------------------------
# Body model: body frame X = the person's left, Y = up, Z = forward (out of the chest);
# pelvis at the origin, standing height about 1.

HIP_X, SHOULDER_X, SHOULDER_Y, NECK_Y = 0.09, 0.125, 0.30, 0.335
UPPER_ARM, FOREARM, THIGH, SHIN = 0.165, 0.145, 0.235, 0.235
HEAD_R = 0.062
# capsule radii (start, end)
R_THIGH, R_SHIN, R_UPPER, R_FORE = (0.056, 0.045), (0.043, 0.033), (0.037, 0.031), (0.031, 0.026)


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _limb_dir(flex: float, abd: float, side: float) -> np.ndarray:
    """Unit direction of a limb hanging down, swung forward by flex and outward by abd."""
    return np.array([side * math.sin(abd), -math.cos(abd) * math.cos(flex),
                     math.cos(abd) * math.sin(flex)])


def _bend(d: np.ndarray, angle: float, toward: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rotate unit vector d by angle toward the part of `toward` perpendicular to d."""
    t = toward - (toward @ d) * d
    n = np.linalg.norm(t)
    if n < 1e-6:
        t = fallback - (fallback @ d) * d
        n = np.linalg.norm(t)
    t = t / n
    return math.cos(angle) * d + math.sin(angle) * t


def sample_pose(rng: np.random.Generator) -> dict:
    """3D joints (body frame) of a random walking, standing or gesturing pose."""
    mode = ("walk", "stand", "gesture")[int(rng.choice(3, p=[0.65, 0.2, 0.15]))]
    rad = math.radians
    amp = {"walk": rng.uniform(15, 35), "stand": rng.uniform(0, 8), "gesture": rng.uniform(0, 20)}[mode]
    s = math.sin(rng.uniform(0, 2 * math.pi))
    lean = rad(rng.uniform(-3, 12) if mode == "walk" else rng.uniform(-4, 6))
    twist = rad(-0.3 * amp * s + rng.normal(0, 4))
    r_torso = _ry(twist) @ _rx(lean)
    j = {}
    neck = r_torso @ np.array([0, NECK_Y, 0])
    r_head = r_torso @ _ry(rad(rng.normal(0, 20))) @ _rx(rad(rng.normal(0, 8)))
    head = neck + r_torso @ np.array([0, 0.085, 0.01])
    j["neck"], j["head"], j["r_head"], j["r_torso"] = neck, head, r_head, r_torso
    j["nose"] = head + r_head @ np.array([0, -0.012, 0.068])
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        j[f"{side}_eye"] = head + r_head @ np.array([sgn * 0.024, 0.012, 0.055])
        j[f"{side}_ear"] = head + r_head @ np.array([sgn * 0.062, 0.0, -0.005])
    gait = {"left": amp * s, "right": -amp * s}
    forward, up, back = np.array([0, 0.3, 1.0]), np.array([0, 1.0, 0]), np.array([0, 0, -1.0])
    gesture_side = SIDES[int(rng.integers(2))]
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        hip = np.array([sgn * HIP_X, 0, 0])
        hflex = gait[side] + rng.normal(0, 5)
        thigh = _limb_dir(rad(hflex), rad(rng.uniform(0, 10)), sgn)
        knee_bend = rad(max(0.0, rng.uniform(0, 12) + 1.2 * max(0.0, -hflex) + rng.normal(0, 5)))
        shin = _bend(thigh, knee_bend, back, back)
        knee = hip + THIGH * thigh
        ankle = knee + SHIN * shin
        phi = math.atan2(shin[2], -shin[1])  # the foot pitches with the shin
        foot = np.array([0, math.sin(phi), math.cos(phi)])
        j[f"{side}_hip"], j[f"{side}_knee"], j[f"{side}_ankle"], j[f"{side}_foot"] = hip, knee, ankle, foot
        # arms swing against the legs of the same side
        if mode == "gesture" and side == gesture_side:
            sflex, sabd, elbow = rng.uniform(30, 150), rng.uniform(0, 80), rng.uniform(0, 130)
        else:
            sflex = -0.9 * gait[side] + rng.normal(0, 8)
            sabd = rng.uniform(4, 20)
            elbow = rng.uniform(5, 40) + 0.5 * max(0.0, sflex)
        shoulder = r_torso @ np.array([sgn * SHOULDER_X, SHOULDER_Y, 0])
        upper = r_torso @ _limb_dir(rad(sflex), rad(sabd), sgn)
        fore = _bend(upper, rad(elbow), r_torso @ forward, r_torso @ up)
        elbow_p = shoulder + UPPER_ARM * upper
        j[f"{side}_shoulder"], j[f"{side}_elbow"] = shoulder, elbow_p
        j[f"{side}_wrist"] = elbow_p + FOREARM * fore
    j["mode"] = mode
    return j


class _Camera:
    """Orthographic projection: body yaw, camera elevation, scale (px per body unit), centre."""

    def __init__(self, yaw: float, elevation: float, scale: float, cx: float, cy: float, ss: int):
        self.r = _rx(-elevation) @ _ry(yaw)  # world Z points at the camera
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


def _hull(pts: np.ndarray) -> np.ndarray:
    """Convex hull (Andrew's monotone chain) of 2D points, counter-clockwise."""
    p = sorted(map(tuple, np.round(pts, 4)))
    if len(p) <= 2:
        return np.array(p)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for q in p:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], q) <= 0:
            lower.pop()
        lower.append(q)
    for q in reversed(p):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], q) <= 0:
            upper.pop()
        upper.append(q)
    return np.array(lower[:-1] + upper[:-1])


# --------------------------------------------------------------------------------------------
# Drawing


def _rgb(c: int) -> tuple[int, int, int]:
    return PALETTE[c][1]


def _pattern(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the second colour goes; u, v in body units along / across the part."""
    if texture == "stripes":
        return np.floor(u / 0.06) % 2 == 1
    if texture == "checks":
        return (np.floor(u / 0.05) + np.floor(v / 0.05)) % 2 == 1
    if texture == "dots":
        row = np.floor(u / 0.055)
        du = u - (row + 0.5) * 0.055
        dv = v - (np.floor(v / 0.055 + 0.5 * (row % 2)) - 0.5 * (row % 2)) * 0.055
        return du * du + dv * dv < 0.016**2
    return np.zeros(u.shape, dtype=bool)


class _Painter:
    def __init__(self, canvas: Image.Image, scale_ss: float):
        self.img = canvas
        self.draw = ImageDraw.Draw(canvas)
        self.scale_ss = scale_ss  # canvas pixels per body unit
        self.w, self.h = canvas.size

    @staticmethod
    def capsule_shapes(p1, p2, r1, r2):
        d = p2 - p1
        n = np.linalg.norm(d)
        shapes = []
        if n > 1e-6:
            perp = np.array([-d[1], d[0]]) / n
            quad = [tuple(p1 + perp * r1), tuple(p2 + perp * r2), tuple(p2 - perp * r2), tuple(p1 - perp * r1)]
            shapes.append(("polygon", quad))
        for p, r in ((p1, r1), (p2, r2)):
            shapes.append(("ellipse", [p[0] - r, p[1] - r, p[0] + r, p[1] + r]))
        return shapes

    @staticmethod
    def draw_shapes(draw: ImageDraw.ImageDraw, shapes, fill, offset=(0.0, 0.0)):
        ox, oy = offset
        for kind, geom in shapes:
            if kind == "polygon":
                draw.polygon([(x - ox, y - oy) for x, y in geom], fill=fill)
            else:
                x0, y0, x1, y1 = geom
                if x1 - x0 >= 0.5:
                    draw.ellipse([x0 - ox, y0 - oy, x1 - ox, y1 - oy], fill=fill)

    def fill(self, shapes, colour, texture="solid", colour2=None, origin=None, axis=None):
        """Fill shapes with colour; overlay colour2 in a pattern fixed to the part's own frame."""
        self.draw_shapes(self.draw, shapes, colour)
        if texture == "solid" or colour2 is None:
            return
        xs, ys = [], []
        for kind, geom in shapes:
            if kind == "polygon":
                xs += [g[0] for g in geom]
                ys += [g[1] for g in geom]
            else:
                xs += [geom[0], geom[2]]
                ys += [geom[1], geom[3]]
        x0, y0 = max(0, int(math.floor(min(xs)))), max(0, int(math.floor(min(ys))))
        x1, y1 = min(self.w, int(math.ceil(max(xs))) + 1), min(self.h, int(math.ceil(max(ys))) + 1)
        if x1 <= x0 or y1 <= y0:
            return
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        self.draw_shapes(ImageDraw.Draw(mask), shapes, 255, offset=(x0, y0))
        gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        a = axis / max(np.linalg.norm(axis), 1e-6)
        rel_x, rel_y = gx - origin[0], gy - origin[1]
        u = (rel_x * a[0] + rel_y * a[1]) / self.scale_ss
        v = (-rel_x * a[1] + rel_y * a[0]) / self.scale_ss
        m = (np.asarray(mask) > 0) & _pattern(texture, u, v)
        if m.any():
            self.img.paste(colour2, (x0, y0), Image.fromarray((m * 255).astype(np.uint8)))


def _scene(cam: dict, cfg: SynthConfig) -> Image.Image:
    """A wide background strip for one camera; images crop windows from it."""
    rng = np.random.default_rng(cam["scene_seed"])
    ss = cfg.supersample
    w, h = cfg.width * ss * 4, cfg.height * ss
    mute = cam["background_mute"]

    def col(c):
        return tuple(int(round((1 - mute) * v + mute * 128)) for v in _rgb(c))

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
    else:  # blobs
        for _ in range(int(rng.integers(25, 45))):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            rw, rh = rng.uniform(4, 24) * ss, rng.uniform(4, 30) * ss
            shape = d.ellipse if rng.random() < 0.5 else d.rectangle
            shape([x - rw, y - rh, x + rw, y + rh], fill=col(cols[int(rng.integers(len(cols)))]))
    return img


_SCENES: dict = {}


def _background(cam: dict, cfg: SynthConfig, rng: np.random.Generator) -> Image.Image:
    key = (json.dumps(cam, sort_keys=True), cfg.width, cfg.height, cfg.supersample)
    if key not in _SCENES:
        if len(_SCENES) > 64:
            _SCENES.clear()
        _SCENES[key] = _scene(cam, cfg)
    scene = _SCENES[key]
    ss = cfg.supersample
    w = cfg.width * ss
    x0 = int(rng.integers(0, scene.width - w + 1))
    img = scene.crop((x0, 0, x0 + w, scene.height))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    # per-image clutter in full palette colours: poles, boxes, round things
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        c = _rgb(int(rng.integers(len(PALETTE))))
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


def _draw_person(p: _Painter, pose: dict, attrs: dict, cam: _Camera) -> None:
    """Paint the parts far-to-near (painter's algorithm on part depth)."""
    s = p.scale_ss
    parts = attrs["parts"]
    acc = attrs["accessories"]
    items = []  # (depth, tie-break, callable)

    def cv(point3):
        return cam.canvas(cam.px(point3))

    def limb(a3, b3, radii, part_attrs, depth_bias=0.0, order=0):
        a, b = cv(a3), cv(b3)
        shapes = _Painter.capsule_shapes(a, b, radii[0] * s, radii[1] * s)
        axis = b - a if np.linalg.norm(b - a) > 1e-3 else np.array([0.0, 1.0])
        if isinstance(part_attrs, tuple):  # plain colour
            fn = lambda: p.fill(shapes, part_attrs)  # noqa: E731
        else:
            fn = lambda: p.fill(shapes, _rgb(part_attrs["colour"]), part_attrs["texture"],  # noqa: E731
                                None if part_attrs["colour2"] is None else _rgb(part_attrs["colour2"]),
                                origin=a, axis=axis)
        items.append((cam.depth(np.stack([a3, b3])) + depth_bias, order, fn))

    for side in SIDES:
        hip, knee, ankle = pose[f"{side}_hip"], pose[f"{side}_knee"], pose[f"{side}_ankle"]
        foot = pose[f"{side}_foot"]
        limb(hip, knee, R_THIGH, parts["thighs"], order=1)
        limb(knee, ankle, R_SHIN, parts["shins"], order=2)
        limb(ankle - 0.02 * foot + np.array([0, -0.015, 0]), ankle + 0.075 * foot + np.array([0, -0.02, 0]),
             (0.03, 0.028), _rgb(parts["shoes"]["colour"]), order=3)
        sh, el, wr = pose[f"{side}_shoulder"], pose[f"{side}_elbow"], pose[f"{side}_wrist"]
        limb(sh, el, R_UPPER, parts["upper_arms"], order=4)
        limb(el, wr, R_FORE, parts["lower_arms"], order=5)
        fore = (wr - el) / np.linalg.norm(wr - el)
        hand = wr + 0.028 * fore
        limb(hand, hand, (0.028, 0.028), SKIN, order=6)
        band = acc["band"]
        if band is not None and band["side"] == side:
            limb(wr - 0.04 * fore, wr - 0.005 * fore, (R_FORE[1] * 1.35,) * 2, _rgb(band["colour"]),
                 depth_bias=1e-3, order=7)

    # torso: convex hull of three rings (shoulders, waist, hips)
    rt = pose["r_torso"]
    ring = []
    for y, hw, hd, rot in ((0.315, 0.14, 0.065, True), (0.12, 0.115, 0.06, True), (-0.04, 0.135, 0.07, False)):
        for sx in (-1, 1):
            for sz in (-1, 1):
                q = np.array([sx * hw, y, sz * hd])
                ring.append(rt @ q if rot else q)
    ring = np.array(ring)
    torso_poly = [tuple(q) for q in _hull(cv(ring))]
    top, bottom = cv(pose["neck"]), cv(np.zeros(3))
    t = parts["torso"]
    items.append((cam.depth(rt @ np.array([0, 0.15, 0])), 0, lambda: p.fill(
        [("polygon", torso_poly)], _rgb(t["colour"]), t["texture"],
        None if t["colour2"] is None else _rgb(t["colour2"]), origin=top, axis=bottom - top)))

    bag = acc["bag"]
    if bag is not None:
        sgn = 1.0 if bag["side"] == "left" else -1.0
        centre = np.array([sgn * (HIP_X + 0.075), -0.07, 0.0])
        box = np.array([centre + np.array([dx, dy, dz]) for dx in (-0.025, 0.025)
                        for dy in (-0.065, 0.065) for dz in (-0.075, 0.075)])
        bag_poly = [tuple(q) for q in _hull(cv(box))]
        strap_from = pose["right_shoulder" if bag["side"] == "left" else "left_shoulder"]
        bc = _rgb(bag["colour"])
        items.append((cam.depth(centre), 8, lambda: p.fill([("polygon", bag_poly)], bc)))
        # the strap crosses the chest; visible over the torso from the front and the back
        strap_to = centre + np.array([0, 0.06, 0])
        limb(strap_from, strap_to, (0.011, 0.011), bc, order=8,
             depth_bias=cam.depth(rt @ np.array([0, 0.15, 0])) - cam.depth(np.stack([strap_from, strap_to]))
             + 1e-3)

    # neck and head (skin, hair, face, hat) as one group drawn at the head's depth
    limb(pose["neck"] - np.array([0, 0.02, 0]), pose["head"], (0.032, 0.032), SKIN, order=9)
    rh, head = pose["r_head"], pose["head"]
    r_px = HEAD_R * s

    def head_group():
        hc = cv(head)
        p.fill([("ellipse", [hc[0] - r_px, hc[1] - r_px, hc[0] + r_px, hc[1] + r_px])], SKIN)
        hair_c = cv(head + rh @ np.array([0, 0.12 * HEAD_R, -0.15 * HEAD_R]))
        rr = 1.03 * r_px
        p.fill([("ellipse", [hair_c[0] - rr, hair_c[1] - rr, hair_c[0] + rr, hair_c[1] + rr])],
               _rgb(parts["hair"]["colour"]))
        facing = cam.view(rh @ np.array([0, 0, 1.0]))[2]
        if facing > -0.1:
            ang = np.linspace(0, 2 * np.pi, 20, endpoint=False)
            circ = np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], -1) * 0.78 * HEAD_R
            face = head + (circ + np.array([0, -0.15 * HEAD_R, 0.45 * HEAD_R])) @ rh.T
            p.fill([("polygon", [tuple(q) for q in cv(face)])], SKIN)
        if acc["hat"] is not None:
            lat, lon = np.meshgrid(np.radians([25, 45, 70, 90]), np.linspace(0, 2 * np.pi, 16, endpoint=False))
            cap = np.stack([np.cos(lat) * np.cos(lon), np.sin(lat), np.cos(lat) * np.sin(lon)], -1).reshape(-1, 3)
            cap = head + (cap * 1.1 * HEAD_R + np.array([0, 0.1 * HEAD_R, 0])) @ rh.T
            p.fill([("polygon", [tuple(q) for q in _hull(cv(cap))])], _rgb(acc["hat"]["colour"]))

    items.append((cam.depth(head), 10, head_group))
    for _, _, fn in sorted(items, key=lambda it: (it[0], it[1])):
        fn()


def _keypoints(pose: dict, cam: _Camera, width: int, height: int, occluder) -> np.ndarray:
    kp = np.zeros((COCO17.num_keypoints, 3), dtype=np.float64)
    head_depth = cam.view(pose["head"])[2]
    for i, name in enumerate(COCO17.keypoints):
        x, y = (round(float(c), 3) for c in cam.px(pose[name]))  # decide on what the sidecar stores
        vis = -0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5
        rel_depth = cam.view(pose[name])[2] - head_depth
        if name in ("nose", "left_eye", "right_eye") and rel_depth < 0.0:
            vis = False  # facing away
        if name.endswith("_ear") and rel_depth < -0.3 * HEAD_R:
            vis = False  # far ear
        if occluder is not None:
            ox0, oy0, ox1, oy1 = occluder
            if ox0 <= x <= ox1 and oy0 <= y <= oy1:
                vis = False
        kp[i] = (x, y, 1.0 if vis else 0.0)
    return kp


def render_image(item: dict, cam_info: dict, cfg: SynthConfig) -> tuple[bytes, np.ndarray, dict]:
    """Render one planned image; returns (JPEG bytes, keypoints [17, 3], per-image metadata)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, item["index"]]))
    W, H, ss = cfg.width, cfg.height, cfg.supersample
    canvas = _background(cam_info, cfg, rng)
    meta: dict = {"kind": item["kind"]}
    kp = np.zeros((COCO17.num_keypoints, 3))
    occluder = None
    if item["kind"] == "clutter":
        d = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(4, 9))):  # body-part-like shapes, no body
            c = _rgb(int(rng.integers(len(PALETTE))))
            a = rng.uniform([0, 0], [W * ss, H * ss])
            b = a + rng.normal(0, 14 * ss, 2)
            r = rng.uniform(2.5, 7) * ss
            _Painter.draw_shapes(d, _Painter.capsule_shapes(a, b, r, r), c)
    else:
        pose = sample_pose(rng)
        if rng.random() < cfg.path_fraction:  # along the camera's path, either direction
            yaw = cam_info["path_yaw"] + 180.0 * int(rng.integers(2)) + rng.normal(0, 25)
        else:
            yaw = rng.uniform(0, 360)
        yaw = float(yaw % 360.0)
        elevation = cam_info["elevation"] + rng.normal(0, 3)
        scale = H * rng.uniform(*cfg.person_height)
        cx = (W - 1) / 2 + rng.uniform(-1, 1) * cfg.shift[0] * W
        cy = (H - 1) / 2 + rng.uniform(-1, 1) * cfg.shift[1] * H
        crop = item["kind"] == "junk" or rng.random() < cam_info["crop"]
        if crop:  # the detection box cut the person: shift up or down (or far sideways for junk)
            if item["kind"] == "junk":
                cx += rng.choice([-1, 1]) * rng.uniform(0.45, 0.8) * W
                cy += rng.uniform(-0.3, 0.3) * H
            else:
                cy += rng.choice([-1, 1]) * rng.uniform(0.12, 0.3) * H
        cam = _Camera(math.radians(yaw), math.radians(elevation), scale, cx, cy, ss)
        painter = _Painter(canvas, scale * ss)
        _draw_person(painter, pose, item["attributes"], cam)
        if item["kind"] != "junk" and rng.random() < cam_info["occlusion"]:
            c = _rgb(int(rng.integers(len(PALETTE))))
            if rng.random() < 0.6:  # something in front of the legs (a bench, a car, a bin)
                oh = rng.uniform(0.2, 0.45) * H
                x0 = rng.uniform(-0.3, 0.3) * W
                occluder = (x0, H - oh, x0 + rng.uniform(0.7, 1.3) * W, H + 0.5)
            else:  # a pole or a passer-by at one side
                ow = rng.uniform(0.25, 0.45) * W
                x0 = -0.5 if rng.random() < 0.5 else W - ow
                occluder = (x0, -0.5, x0 + ow, H + 0.5)
            occluder = tuple(round(float(v), 3) for v in occluder)
            ox0, oy0, ox1, oy1 = occluder
            box = [(ox0 + 0.5) * ss - 0.5, (oy0 + 0.5) * ss - 0.5, (ox1 + 0.5) * ss - 0.5, (oy1 + 0.5) * ss - 0.5]
            ImageDraw.Draw(canvas).rectangle(box, fill=c)
            if rng.random() < 0.5:
                painter.fill([("polygon", [(box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])])],
                             c, "stripes", _rgb(int(rng.integers(len(PALETTE)))),
                             origin=np.array(box[:2]), axis=np.array([0.0, 1.0]))
        kp = _keypoints(pose, cam, W, H, occluder)
        meta.update({"yaw": round(yaw, 2), "pose": pose["mode"], "crop": bool(crop),
                     "occluder": None if occluder is None else list(occluder)})
    img = canvas.reduce(ss) if ss > 1 else canvas
    # camera: blur, illumination (gain and colour cast, small per-image flicker), sensor noise
    if cam_info["blur"] > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(cam_info["blur"]))
    arr = np.asarray(img, dtype=np.float32)
    gain = cam_info["gain"] * rng.uniform(0.9, 1.1)
    arr = arr * (gain * np.asarray(cam_info["cast"], dtype=np.float32))
    arr = arr + rng.normal(0, cam_info["noise"], arr.shape).astype(np.float32)
    img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=cfg.jpeg_quality)
    return buf.getvalue(), kp, meta


# --------------------------------------------------------------------------------------------
# Planning and writing


@dataclass
class SynthPlan:
    cameras: list[dict]
    identities: dict[int, dict]  # pid -> attributes
    splits: dict[str, list[int]]  # "train" / "test" -> pids
    items: list[dict] = field(default_factory=list)


def plan_dataset(cfg: SynthConfig) -> SynthPlan:
    """Decide every image (who, which camera, which split, file name) from the seed alone."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
    C = cfg.cameras
    cameras = [sample_camera(rng, cfg, c) for c in range(1, C + 1)]
    n_people = cfg.train_identities + cfg.test_identities
    n_extra_people = (cfg.distractors - int(round(cfg.distractors * cfg.clutter_fraction))) + cfg.junk
    seen: set[str] = set()
    people = []
    while len(people) < n_people + n_extra_people:  # every person looks different
        a = sample_attributes(rng, cfg)
        sig = _signature(a)
        if sig not in seen:
            seen.add(sig)
            people.append(a)
    identities = {pid: people[pid - 1] for pid in range(1, n_people + 1)}
    train_pids = list(range(1, cfg.train_identities + 1))
    test_pids = list(range(cfg.train_identities + 1, n_people + 1))
    extra = iter(people[n_people:])
    items: list[dict] = []

    def add(split, kind, pid, camid, attrs):
        items.append({"index": len(items), "split": split, "kind": kind, "pid": pid,
                      "camera": camid, "attributes": attrs})

    for pid in train_pids:
        n = int(rng.integers(cfg.train_images[0], cfg.train_images[1] + 1))
        k = int(rng.integers(min(cfg.train_cameras[0], C), min(cfg.train_cameras[1], C) + 1))
        cams = sorted(int(c) + 1 for c in rng.choice(C, min(k, n), replace=False))
        per_cam = cams + [int(c) for c in rng.choice(cams, n - len(cams))]
        for camid in sorted(per_cam):
            add("train", "person", pid, camid, identities[pid])
    for pid in test_pids:
        k = int(rng.integers(min(cfg.test_cameras[0], C), min(cfg.test_cameras[1], C) + 1))
        for camid in sorted(int(c) + 1 for c in rng.choice(C, k, replace=False)):
            m = int(rng.integers(cfg.test_images_per_camera[0], cfg.test_images_per_camera[1] + 1))
            for i in range(m):  # the first image of each camera is the query
                add("query" if i == 0 else "gallery", "person", pid, camid, identities[pid])
    n_clutter = int(round(cfg.distractors * cfg.clutter_fraction))
    for i in range(cfg.distractors):
        camid = int(rng.integers(1, C + 1))
        if i < n_clutter:
            add("gallery", "clutter", 0, camid, None)
        else:
            add("gallery", "person", 0, camid, next(extra))
    for _ in range(cfg.junk):
        add("gallery", "junk", -1, int(rng.integers(1, C + 1)), next(extra))

    # frame numbers: increasing per camera in a random order of appearance
    frame = {c: 0 for c in range(1, C + 1)}
    for idx in rng.permutation(len(items)):
        it = items[int(idx)]
        frame[it["camera"]] += int(rng.integers(1, 40))
        pid = "-1" if it["pid"] < 0 else f"{it['pid']:04d}"
        it["path"] = f"{SPLIT_DIRS[it['split']]}/{pid}_c{it['camera']}s1_{frame[it['camera']]:06d}_00.jpg"
    if max(frame.values()) > 999999:
        raise ValueError("too many images per camera for 6-digit frame numbers")
    return SynthPlan(cameras, identities, {"train": train_pids, "test": test_pids}, items)


_WORKER: dict = {}


def _init_worker(root: str, cfg_dict: dict, cameras: list[dict]) -> None:
    _WORKER["root"] = Path(root)
    _WORKER["cfg"] = SynthConfig.from_dict(cfg_dict)
    _WORKER["cameras"] = {c["camera"]: c for c in cameras}


def _work(item: dict) -> tuple[str, list, dict]:
    cfg = _WORKER["cfg"]
    data, kp, meta = render_image(item, _WORKER["cameras"][item["camera"]], cfg)
    (_WORKER["root"] / item["path"]).write_bytes(data)
    return item["path"], kp.tolist(), meta


def is_synthetic_tree(root: str | Path) -> bool:
    """True when `root` carries keyreid's own marker: the MARKER file written before the first
    image, or a synth.json of this generator (sets written before the marker existed)."""
    root = Path(root)
    if (root / MARKER).is_file():
        return True
    try:
        return json.loads((root / "synth.json").read_text(encoding="utf-8")).get("format") == SYNTH_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _clear_for_generation(out: Path, overwrite: bool) -> None:
    """Make `out` ready for a new set, deleting only a set this generator wrote.

    A folder without keyreid's marker that holds any of the generator's targets is somebody's
    dataset (a real Market-1501 tree has the same folder names): it is never touched.
    """
    from keyreid.errors import DataError

    targets = [out / d for d in SPLIT_DIRS.values()] + [out / "keypoints.jsonl", out / "synth.json"]
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not is_synthetic_tree(out):
        raise DataError(out, f"holds {existing[0].name} but is not a keyreid synthetic set (no "
                             f"{MARKER} or synth.json); refusing to write into it: choose an empty "
                             f"or new folder")
    if existing and not overwrite:
        raise DataError(out, f"a synthetic set is already there ({existing[0].name}); pass "
                             f"--overwrite to replace it")
    for t in existing:
        if t.is_symlink() or not t.is_dir():
            t.unlink()  # a link is removed, never what it points to
        else:
            shutil.rmtree(t)
    out.mkdir(parents=True, exist_ok=True)
    # written first, so a generation killed half-way can still be replaced
    (out / MARKER).write_text(json.dumps({"format": SYNTH_FORMAT, "version": SYNTH_VERSION}) + "\n",
                              encoding="utf-8")


def generate(out: str | Path, cfg: SynthConfig | None = None, workers: int | None = None,
             overwrite: bool = False,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Render the whole set under `out`; returns per-split image counts.

    workers: processes (None = all CPUs, 1 = in this process); the output does not depend on it.
    progress: called as progress(done, total) while images are written.
    """
    cfg = cfg or SynthConfig()
    out = Path(out)
    _clear_for_generation(out, overwrite)
    for d in SPLIT_DIRS.values():
        (out / d).mkdir(parents=True, exist_ok=True)

    plan = plan_dataset(cfg)
    total = len(plan.items)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    keypoints: dict[str, np.ndarray] = {}
    images: dict[str, dict] = {}
    init_args = (str(out), asdict(cfg), plan.cameras)

    def collect(result, done):
        rel, kp, meta = result
        keypoints[rel] = np.asarray(kp, dtype=np.float32)
        images[rel] = meta
        if progress is not None:
            progress(done, total)

    if workers == 1:
        _init_worker(*init_args)
        for i, item in enumerate(plan.items, 1):
            collect(_work(item), i)
    else:
        # spawn: safe when the caller has threads (torch), same result as in-process
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
            for i, res in enumerate(pool.imap_unordered(_work, plan.items, chunksize=16), 1):
                collect(res, i)

    write_sidecar(out / "keypoints.jsonl", COCO17, keypoints)
    by_path = {it["path"]: it for it in plan.items}
    counts = {s: sum(1 for it in plan.items if it["split"] == s) for s in SPLIT_DIRS}
    counts["distractors"] = sum(1 for it in plan.items if it["pid"] == 0)
    counts["junk"] = sum(1 for it in plan.items if it["pid"] == -1)
    meta = {
        "format": SYNTH_FORMAT,
        "version": SYNTH_VERSION,
        "config": asdict(cfg),
        "skeleton": COCO17.name,
        "palette": [{"name": n, "rgb": list(rgb)} for n, rgb in PALETTE],
        "skin": list(SKIN),
        "parts": list(PARTS),
        "textured_parts": list(TEXTURED_PARTS),
        "textures": list(TEXTURES),
        "cameras": plan.cameras,
        "splits": plan.splits,
        "identities": {f"{pid:04d}": a for pid, a in plan.identities.items()},
        # distractor people and junk have their own attributes (none for clutter), keyed by path
        "others": {p: by_path[p]["attributes"] for p in sorted(by_path) if by_path[p]["pid"] <= 0},
        "images": {p: images[p] for p in sorted(images)},
        "counts": counts,
    }
    tmp = out / "synth.json.tmp"
    tmp.write_text(json.dumps(meta, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / "synth.json")
    return counts


def load_synth(root: str | Path) -> dict:
    """Read OUT/synth.json (config, cameras, true attributes)."""
    meta = json.loads((Path(root) / "synth.json").read_text(encoding="utf-8"))
    if meta.get("format") != SYNTH_FORMAT:
        raise ValueError(f"{root}/synth.json is not a keyreid synthetic description")
    return meta


def true_attributes(meta: dict, rel_path: str) -> Optional[dict]:
    """True attributes of the person in an image (None for clutter)."""
    if rel_path in meta["others"]:
        return meta["others"][rel_path]
    pid = Path(rel_path).name.split("_")[0]
    return meta["identities"][pid]
