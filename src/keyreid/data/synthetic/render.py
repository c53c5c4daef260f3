"""One image: its random draws (a Scene) and the pure drawing of a person into a scene.

An image's random numbers all come from one generator seeded by (dataset seed, image index) and
are drawn by `sample_scene` in the order the generator has always used: background window and
clutter, (clutter shapes | 3D pose, yaw, elevation, scale, centre, crop, occluder), camera gain
flicker, sensor noise. `paint` then draws the attributes of any person into a scene without
drawing a single random number; that split is what lets paired.py put one person into another
image's pose while the dataset's own images stay byte-identical.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from keyreid.data.keypoints import COCO17
from keyreid.data.synthetic.cameras import Camera, background
from keyreid.data.synthetic.config import PALETTE, SynthConfig, palette_rgb
from keyreid.data.synthetic.drawing import Painter, draw_occluder, draw_person, project_keypoints
from keyreid.data.synthetic.poses import sample_pose


@dataclass
class PersonGeometry:
    """Where and how the person stands: 3D pose and its orthographic projection."""

    pose: dict  # sample_pose's joints (body frame)
    yaw: float  # degrees, body yaw
    elevation: float  # degrees, camera looking down
    scale: float  # output pixels per body unit
    cx: float  # output pixel of the pelvis
    cy: float
    crop: bool  # the detection box cuts the person (already applied to cx / cy)

    def camera(self, ss: int) -> Camera:
        return Camera(math.radians(self.yaw), math.radians(self.elevation), self.scale, self.cx, self.cy, ss)


@dataclass
class Occluder:
    box: tuple[float, float, float, float]  # output pixels (x0, y0, x1, y1), rounded to 1e-3
    colour: tuple[int, int, int]
    stripes: Optional[tuple[int, int, int]]  # second colour, or None for a plain box


@dataclass
class Scene:
    """Every random choice of one image, nothing of the person's appearance."""

    kind: str  # "person" | "junk" | "clutter"
    background: Image.Image  # supersampled RGB canvas before the person (clutter shapes included)
    person: Optional[PersonGeometry]  # None for clutter
    occluder: Optional[Occluder]
    blur: float  # camera Gaussian blur radius (output pixels)
    gain: float  # camera gain times this image's flicker
    cast: tuple[float, float, float]  # camera colour cast
    noise: np.ndarray  # float32 [H, W, 3] sensor noise


def sample_scene(item: dict, cam_info: dict, cfg: SynthConfig) -> Scene:
    """Draw one planned image's random choices (same generator, same order as always)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, item["index"]]))
    W, H, ss = cfg.width, cfg.height, cfg.supersample
    canvas = background(cam_info, cfg, rng)
    person = occluder = None
    if item["kind"] == "clutter":
        d = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(4, 9))):  # body-part-like shapes, no body
            c = palette_rgb(int(rng.integers(len(PALETTE))))
            a = rng.uniform([0, 0], [W * ss, H * ss])
            b = a + rng.normal(0, 14 * ss, 2)
            r = rng.uniform(2.5, 7) * ss
            Painter.draw_shapes(d, Painter.capsule_shapes(a, b, r, r), c)
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
        person = PersonGeometry(pose, yaw, elevation, scale, cx, cy, bool(crop))
        if item["kind"] != "junk" and rng.random() < cam_info["occlusion"]:
            c = palette_rgb(int(rng.integers(len(PALETTE))))
            if rng.random() < cfg.occluder_low:  # something in front of the legs (a bench, a car, a bin)
                oh = rng.uniform(0.2, 0.45) * H
                x0 = rng.uniform(-0.3, 0.3) * W
                box = (x0, H - oh, x0 + rng.uniform(0.7, 1.3) * W, H + 0.5)
            else:  # a pole or a passer-by at one side
                ow = rng.uniform(0.25, 0.45) * W
                x0 = -0.5 if rng.random() < 0.5 else W - ow
                box = (x0, -0.5, x0 + ow, H + 0.5)
            box = tuple(round(float(v), 3) for v in box)
            stripes = palette_rgb(int(rng.integers(len(PALETTE)))) if rng.random() < 0.5 else None
            occluder = Occluder(box, c, stripes)
    gain = cam_info["gain"] * rng.uniform(0.9, 1.1)
    noise = rng.normal(0, cam_info["noise"], (H, W, 3)).astype(np.float32)
    return Scene(item["kind"], canvas, person, occluder, cam_info["blur"], gain, tuple(cam_info["cast"]), noise)


def coverage_mask(coverage: Image.Image, ss: int) -> np.ndarray:
    """Supersampled 0/255 coverage -> bool [H, W]: True where more than half of an output
    pixel's ss x ss block is covered (the image is box-downsampled over the same blocks)."""
    cov = np.asarray(coverage, dtype=np.float32) / 255.0
    h, w = cov.shape[0] // ss, cov.shape[1] // ss
    return cov[:h * ss, :w * ss].reshape(h, ss, w, ss).mean(axis=(1, 3)) > 0.5


def paint(attrs: Optional[dict], scene: Scene, cfg: SynthConfig,
          with_mask: bool = False) -> tuple[np.ndarray, np.ndarray, dict, Optional[np.ndarray]]:
    """Draw `attrs` into `scene` (no random draws): (image uint8 [H, W, 3] before JPEG,
    keypoints [17, 3], metadata, mask bool [H, W] or None).

    The mask is the person's visible pixels: every shape the person is painted with (body,
    skin, hair, hat, bag and strap, wrist band), minus the occluder box; downsampled as in
    `coverage_mask`, before the camera blur. Empty for clutter.
    """
    W, H, ss = cfg.width, cfg.height, cfg.supersample
    canvas = scene.background.copy()
    coverage = Image.new("L", canvas.size, 0) if with_mask else None
    meta: dict = {"kind": scene.kind}
    kp = np.zeros((COCO17.num_keypoints, 3))
    if scene.person is not None:
        g = scene.person
        cam = g.camera(ss)
        draw_person(Painter(canvas, g.scale * ss, coverage), g.pose, attrs, cam)
        occ = scene.occluder
        if occ is not None:
            draw_occluder(canvas, g.scale * ss, ss, occ.box, occ.colour, occ.stripes, coverage)
        kp = project_keypoints(g.pose, cam, W, H, None if occ is None else occ.box)
        meta.update({"yaw": round(g.yaw, 2), "pose": g.pose["mode"], "crop": g.crop,
                     "occluder": None if occ is None else list(occ.box)})
    img = canvas.reduce(ss) if ss > 1 else canvas
    # camera: blur, illumination (gain and colour cast, small per-image flicker), sensor noise
    if scene.blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(scene.blur))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * (scene.gain * np.asarray(scene.cast, dtype=np.float32))
    arr = arr + scene.noise
    image = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    mask = None if coverage is None else coverage_mask(coverage, ss)
    return image, kp, meta, mask


def render_array(item: dict, cam_info: dict, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """One planned image before JPEG: (uint8 [H, W, 3], keypoints [17, 3], metadata)."""
    image, kp, meta, _ = paint(item["attributes"], sample_scene(item, cam_info, cfg), cfg)
    return image, kp, meta


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def render_image(item: dict, cam_info: dict, cfg: SynthConfig) -> tuple[bytes, np.ndarray, dict]:
    """Render one planned image; returns (JPEG bytes, keypoints [17, 3], per-image metadata)."""
    image, kp, meta = render_array(item, cam_info, cfg)
    return encode_jpeg(image, cfg.jpeg_quality), kp, meta

