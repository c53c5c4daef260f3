"""One video frame: people and static occluders painted far to near over a camera's static
background, with each person's ground truth (box, visibility, keypoints).

Each person is drawn by drawing.draw_person onto a canvas of its own (so its coverage holds all
of its pixels, also those outside the frame) and pasted into the frame through that coverage.
A label map of the frame's supersampled pixels records the paint order of what was painted last
(nearest) at every pixel: a person's visibility is the fraction of its own pixels that still
carry its label, and a keypoint is hidden when something painted later covers its pixel.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageFilter

from keyreid.data.synthetic.cameras import Camera, scene_strip
from keyreid.data.synthetic.config import palette_rgb
from keyreid.data.synthetic.drawing import Painter, draw_occluder, draw_person, project_keypoints
from keyreid.data.synthetic.video_camera import StaticOccluder, VideoCamera
from keyreid.data.synthetic.video_config import VideoConfig
from keyreid.data.synthetic.video_people import PersonState
from keyreid.data.synthetic.walk import pelvis_lift, walk_pose

NEAREST = 1.5  # metres: closer people are not drawn (they would fill the frame)


@dataclass
class Patch:
    """A pre-drawn static occluder: its pixels at (x0, y0) of the supersampled canvas."""

    x0: int
    y0: int
    rgb: Image.Image
    mask: Image.Image
    depth: float


@dataclass
class Placement:
    """Where a person shows in a camera: the 3D walk pose and its orthographic projection."""

    state: PersonState
    pose: dict
    yaw: float  # radians
    elevation: float
    scale: float  # output pixels per body unit
    cx: float
    cy: float
    depth: float

    def body(self, ss: int, dx: float = 0.0, dy: float = 0.0) -> Camera:
        return Camera(self.yaw, self.elevation, self.scale, self.cx - dx, self.cy - dy, ss)


def place_person(cam: VideoCamera, p: PersonState, width: int, height: int) -> Optional[Placement]:
    """The person's placement in `cam`, or None when it cannot show (behind the camera, too close,
    beyond the backdrop, or wholly outside the frame)."""
    pose = walk_pose(p.phase, p.gait)
    y = p.height * pelvis_lift(pose)
    if cam.ground_distance(p.x, p.z) > cam.wall:
        return None
    u, v, depth = (float(a) for a in cam.project(np.array([p.x, y, p.z])))
    if depth < NEAREST:
        return None
    scale = cam.focal * p.height / depth
    reach = 0.7 * scale  # beyond the body's extent from the pelvis in any direction
    if u + reach < -0.5 or u - reach > width - 0.5 or v + reach < -0.5 or v - reach > height - 0.5:
        return None
    yaw, elevation = cam.body_view(p.x, p.z, y, p.heading)
    return Placement(p, pose, yaw, elevation, scale, u, v, depth)


def ground_background(cam: VideoCamera, cfg: VideoConfig, half: float) -> Image.Image:
    """The camera's static background (supersampled): the paved route and the ground beside it
    in perspective, the camera's backdrop (cameras.scene_strip) beyond its wall distance."""
    ss, W, H = cfg.supersample, cfg.width, cfg.height
    app = cam.appearance
    arr = np.asarray(scene_strip(app, W, H, ss)).copy()
    gx, gy = np.meshgrid((np.arange(W * ss) + 0.5) / ss - 0.5, (np.arange(H * ss) + 0.5) / ss - 0.5)
    rays = (cam.forward + ((gx - cam.cx) / cam.focal)[..., None] * cam.right
            - ((gy - cam.cy) / cam.focal)[..., None] * cam.up)
    down = rays[..., 1] < -1e-6
    t = np.where(down, -cam.height / np.where(down, rays[..., 1], -1.0), np.inf)
    hx, hz = cam.x + t * rays[..., 0], cam.z + t * rays[..., 2]
    ground = down & (np.hypot(hx - cam.x, hz - cam.z) < cam.wall)
    mute = app["background_mute"]
    # beside the route: the camera's first backdrop colour, darkened and muted like the backdrop
    side = np.array([(1 - mute) * 0.5 * c + (0.5 + 0.5 * mute) * 128
                     for c in palette_rgb(app["background_colours"][0])])
    slabs = np.array([[172, 170, 165], [150, 149, 146]], dtype=np.float64)
    cell = 1.2  # paving slabs in metres
    check = ((np.floor(hx[ground] / cell) + np.floor(hz[ground] / cell)) % 2).astype(int)
    colour = np.where((np.abs(hz[ground]) <= half)[:, None], slabs[check], side * (0.92 + 0.08 * check[:, None]))
    kerb = np.abs(np.abs(hz[ground]) - half) < 0.1
    colour[kerb] = (95, 95, 98)
    arr[ground] = np.round(colour).astype(np.uint8)
    return Image.fromarray(arr)


def occluder_patch(cam: VideoCamera, occ: StaticOccluder, cfg: VideoConfig) -> Optional[Patch]:
    """Draw a static occluder once per camera (drawing.draw_occluder for each of its parts)."""
    ss, W, H = cfg.supersample, cfg.width, cfg.height
    boxes, depth = occ.boxes(cam)
    if not boxes:
        return None
    canvas = Image.new("RGB", (W * ss, H * ss))
    cover = Image.new("L", canvas.size, 255)  # draw_occluder clears its pixels from a coverage
    stripe_scale = ss * cam.focal / depth * 0.2  # stripes about 0.3 m apart
    for k, box in enumerate(boxes):
        colour = occ.colour if k == 0 or occ.kind != "car" else (60, 70, 85)  # a car's windows
        draw_occluder(canvas, stripe_scale, ss, box, colour, occ.stripes if k == 0 else None, cover)
    mask = Image.eval(cover, lambda c: 255 - c)
    bbox = mask.getbbox()
    if bbox is None:
        return None
    return Patch(bbox[0], bbox[1], canvas.crop(bbox), mask.crop(bbox), depth)


def _region(label: np.ndarray, x0: int, y0: int, h: int, w: int):
    """The part of a (h, w) patch at (x0, y0) inside the label map: (frame slices, patch slices)."""
    X0, Y0 = max(x0, 0), max(y0, 0)
    X1, Y1 = min(x0 + w, label.shape[1]), min(y0 + h, label.shape[0])
    if X1 <= X0 or Y1 <= Y0:
        return None
    return (slice(Y0, Y1), slice(X0, X1)), (slice(Y0 - y0, Y1 - y0), slice(X0 - x0, X1 - x0))


def _stamp(label: np.ndarray, x0: int, y0: int, mask: np.ndarray, rank: int) -> None:
    reg = _region(label, x0, y0, *mask.shape)
    if reg is not None:
        label[reg[0]][mask[reg[1]]] = rank


def _draw_person(canvas: Image.Image, pl: Placement, ss: int):
    """Draw onto a private canvas around the body, paste it: (x0, y0, own mask) in canvas pixels."""
    body = pl.body(ss)
    pts = np.stack([v for k, v in pl.pose.items()
                    if isinstance(v, np.ndarray) and v.shape == (3,) and not k.endswith("_foot")])
    xy = body.px(pts)
    margin = 0.2 * pl.scale + 1  # hat, hair, shoes, a bag: beyond the joints
    ox, oy = (int(math.floor(c)) for c in xy.min(0) - margin)
    ow, oh = (int(math.ceil(c)) + 1 for c in xy.max(0) + margin - (ox, oy))
    local = Image.new("RGB", (ow * ss, oh * ss))
    cover = Image.new("L", local.size, 0)
    draw_person(Painter(local, pl.scale * ss, cover), pl.pose, pl.state.attributes, pl.body(ss, ox, oy))
    canvas.paste(local, (ox * ss, oy * ss), cover)
    return ox * ss, oy * ss, np.asarray(cover) > 0


def render_view(cam: VideoCamera, people: list[PersonState], cfg: VideoConfig, background: Image.Image,
                patches: list[Patch], rng: np.random.Generator,
                noise_bank: Optional[np.ndarray] = None) -> tuple[np.ndarray, list[dict]]:
    """Paint one frame: (uint8 [H, W, 3], truths). A truth per person drawn (also those wholly
    hidden): id, box (x0, y0, x1, y1: its pixels' extent in output pixels, pixel centres at
    integers, not clipped), visibility, keypoints [17, 3], yaw (degrees), depth (metres)."""
    W, H, ss = cfg.width, cfg.height, cfg.supersample
    canvas = background.copy()
    label = np.zeros((H * ss, W * ss), dtype=np.int16)
    items = [(pl.depth, 0, pl.state.id, pl) for pl in (place_person(cam, p, W, H) for p in people) if pl is not None]
    items += [(pa.depth, 1, k, pa) for k, pa in enumerate(patches)]
    items.sort(key=lambda it: (-it[0], it[1], it[2]))  # far to near
    drawn = []
    for rank, (_, kind, _, obj) in enumerate(items, 1):
        if kind == 0:
            x0, y0, own = _draw_person(canvas, obj, ss)
            drawn.append((rank, obj, x0, y0, own))
        else:
            canvas.paste(obj.rgb, (obj.x0, obj.y0), obj.mask)
            x0, y0, own = obj.x0, obj.y0, np.asarray(obj.mask) > 0
        _stamp(label, x0, y0, own, rank)
    truths = []
    for rank, pl, x0, y0, own in drawn:
        total = int(own.sum())
        if total == 0:
            continue
        reg = _region(label, x0, y0, *own.shape)
        visible = 0 if reg is None else int((label[reg[0]] == rank).sum())
        rows, cols = np.flatnonzero(own.any(1)), np.flatnonzero(own.any(0))
        box = (float((x0 + cols[0]) / ss - 0.5), float((y0 + rows[0]) / ss - 0.5),
               float((x0 + cols[-1] + 1) / ss - 0.5), float((y0 + rows[-1] + 1) / ss - 0.5))
        kp = project_keypoints(pl.pose, pl.body(ss), W, H, None)
        for j in np.flatnonzero(kp[:, 2] > 0):  # hidden by whatever was painted over it
            px = min(max(int(round((kp[j, 0] + 0.5) * ss - 0.5)), 0), W * ss - 1)
            py = min(max(int(round((kp[j, 1] + 0.5) * ss - 0.5)), 0), H * ss - 1)
            if label[py, px] > rank:
                kp[j, 2] = 0.0
        truths.append({"id": pl.state.id, "box": box, "visibility": visible / total, "keypoints": kp,
                       "yaw": round(math.degrees(pl.yaw), 4) % 360.0, "depth": pl.depth})
    return _camera_effects(canvas, cam.appearance, cfg, rng, noise_bank), truths


def _camera_effects(canvas: Image.Image, app: dict, cfg: VideoConfig, rng: np.random.Generator,
                    noise_bank: Optional[np.ndarray] = None) -> np.ndarray:
    """Downsample, blur, gain with a little flicker, colour cast, sensor noise (as the stills)."""
    img = canvas.reduce(cfg.supersample) if cfg.supersample > 1 else canvas
    if app["blur"] > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(app["blur"]))
    gain = app["gain"] * rng.uniform(0.97, 1.03)
    arr = np.asarray(img, dtype=np.float32) * (gain * np.asarray(app["cast"], dtype=np.float32))
    if noise_bank is None:
        noise = rng.standard_normal(arr.shape, dtype=np.float32)
    else:  # a random window of the camera's noise: drawing a frame's worth was the frame's hot spot
        dy, dx = (int(rng.integers(n - m + 1)) for n, m in zip(noise_bank.shape[:2], arr.shape[:2]))
        noise = noise_bank[dy:dy + arr.shape[0], dx:dx + arr.shape[1]]
        if rng.random() < 0.5:
            noise = noise[::-1, ::-1]
    arr += app["noise"] * noise
    np.rint(arr, out=arr)
    return np.clip(arr, 0, 255, out=arr).astype(np.uint8)


_STATIC: dict = {}  # per process: a camera's background, occluder patches and noise are made once


def camera_static(world, index: int) -> tuple[Image.Image, list[Patch], np.ndarray]:
    """Camera `index`'s static background, occluder patches and sensor-noise bank (unit std,
    larger than a frame; frames take random windows of it), cached per process."""
    cfg = world.cfg
    key = (json.dumps(cfg.to_dict(), sort_keys=True), index)
    if key not in _STATIC:
        if len(_STATIC) > 16:
            _STATIC.clear()
        cam = world.cameras[index]
        patches = [p for p in (occluder_patch(cam, o, cfg) for o in world.occluders) if p is not None]
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 4, index + 1]))
        bank = rng.standard_normal((cfg.height + 48, cfg.width + 48, 3), dtype=np.float32)
        _STATIC[key] = (ground_background(cam, cfg, world.route[2]), patches, bank)
    return _STATIC[key]


def render_frame(world, index: int, frame: int) -> tuple[np.ndarray, list[dict]]:
    """Frame `frame` (1-based) of camera `index` (0-based): its own seed, so any process order
    gives the same pixels."""
    cfg = world.cfg
    background, patches, bank = camera_static(world, index)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2, index + 1, frame]))
    return render_view(world.cameras[index], world.states((frame - 1) / cfg.fps), cfg, background, patches, rng,
                       bank)
