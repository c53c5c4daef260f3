"""Drawing: the painter (fills with part-fixed textures), the person, occluders, keypoints.

Nothing here draws random numbers: every random choice of an image is made before (render.py's
Scene), so the same person can be drawn again in another scene.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from keyreid.data.keypoints import COCO17
from keyreid.data.synthetic.cameras import Camera
from keyreid.data.synthetic.config import SIDES, SKIN, palette_rgb
from keyreid.data.synthetic.poses import HEAD_R, HIP_X, R_FORE, R_SHIN, R_THIGH, R_UPPER


def convex_hull(pts: np.ndarray) -> np.ndarray:
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


class Painter:
    """Fills shapes on a canvas. With `coverage` (an 'L' image of the canvas size) every filled
    shape is also drawn there in 255: the person's own pixels, drawn by the same rasteriser."""

    def __init__(self, canvas: Image.Image, scale_ss: float, coverage: Optional[Image.Image] = None):
        self.img = canvas
        self.draw = ImageDraw.Draw(canvas)
        self.scale_ss = scale_ss  # canvas pixels per body unit
        self.w, self.h = canvas.size
        self.coverage = None if coverage is None else ImageDraw.Draw(coverage)

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
        if self.coverage is not None:  # the texture stays inside the shapes: no second pass
            self.draw_shapes(self.coverage, shapes, 255)
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


def draw_person(p: Painter, pose: dict, attrs: dict, cam: Camera) -> None:
    """Paint the parts far-to-near (painter's algorithm on part depth); accessories included."""
    s = p.scale_ss
    parts = attrs["parts"]
    acc = attrs["accessories"]
    items = []  # (depth, tie-break, callable)

    def cv(point3):
        return cam.canvas(cam.px(point3))

    def limb(a3, b3, radii, part_attrs, depth_bias=0.0, order=0):
        a, b = cv(a3), cv(b3)
        shapes = Painter.capsule_shapes(a, b, radii[0] * s, radii[1] * s)
        axis = b - a if np.linalg.norm(b - a) > 1e-3 else np.array([0.0, 1.0])
        if isinstance(part_attrs, tuple):  # plain colour
            fn = lambda: p.fill(shapes, part_attrs)  # noqa: E731
        else:
            fn = lambda: p.fill(shapes, palette_rgb(part_attrs["colour"]), part_attrs["texture"],  # noqa: E731
                                None if part_attrs["colour2"] is None else palette_rgb(part_attrs["colour2"]),
                                origin=a, axis=axis)
        items.append((cam.depth(np.stack([a3, b3])) + depth_bias, order, fn))

    for side in SIDES:
        hip, knee, ankle = pose[f"{side}_hip"], pose[f"{side}_knee"], pose[f"{side}_ankle"]
        foot = pose[f"{side}_foot"]
        limb(hip, knee, R_THIGH, parts["thighs"], order=1)
        limb(knee, ankle, R_SHIN, parts["shins"], order=2)
        limb(ankle - 0.02 * foot + np.array([0, -0.015, 0]), ankle + 0.075 * foot + np.array([0, -0.02, 0]),
             (0.03, 0.028), palette_rgb(parts["shoes"]["colour"]), order=3)
        sh, el, wr = pose[f"{side}_shoulder"], pose[f"{side}_elbow"], pose[f"{side}_wrist"]
        limb(sh, el, R_UPPER, parts["upper_arms"], order=4)
        limb(el, wr, R_FORE, parts["lower_arms"], order=5)
        fore = (wr - el) / np.linalg.norm(wr - el)
        hand = wr + 0.028 * fore
        limb(hand, hand, (0.028, 0.028), SKIN, order=6)
        band = acc["band"]
        if band is not None and band["side"] == side:
            limb(wr - 0.04 * fore, wr - 0.005 * fore, (R_FORE[1] * 1.35,) * 2, palette_rgb(band["colour"]),
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
    torso_poly = [tuple(q) for q in convex_hull(cv(ring))]
    top, bottom = cv(pose["neck"]), cv(np.zeros(3))
    t = parts["torso"]
    items.append((cam.depth(rt @ np.array([0, 0.15, 0])), 0, lambda: p.fill(
        [("polygon", torso_poly)], palette_rgb(t["colour"]), t["texture"],
        None if t["colour2"] is None else palette_rgb(t["colour2"]), origin=top, axis=bottom - top)))

    bag = acc["bag"]
    if bag is not None:
        sgn = 1.0 if bag["side"] == "left" else -1.0
        centre = np.array([sgn * (HIP_X + 0.075), -0.07, 0.0])
        box = np.array([centre + np.array([dx, dy, dz]) for dx in (-0.025, 0.025)
                        for dy in (-0.065, 0.065) for dz in (-0.075, 0.075)])
        bag_poly = [tuple(q) for q in convex_hull(cv(box))]
        strap_from = pose["right_shoulder" if bag["side"] == "left" else "left_shoulder"]
        bc = palette_rgb(bag["colour"])
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
               palette_rgb(parts["hair"]["colour"]))
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
            p.fill([("polygon", [tuple(q) for q in convex_hull(cv(cap))])], palette_rgb(acc["hat"]["colour"]))

    items.append((cam.depth(head), 10, head_group))
    for _, _, fn in sorted(items, key=lambda it: (it[0], it[1])):
        fn()


def draw_occluder(canvas: Image.Image, scale_ss: float, ss: int, box: tuple, colour: tuple,
                  stripes: Optional[tuple], coverage: Optional[Image.Image] = None) -> None:
    """A box in front of the person (output-pixel corners `box`), striped in `stripes` when
    given; its pixels are taken out of the person's `coverage`."""
    ox0, oy0, ox1, oy1 = box
    cbox = [(ox0 + 0.5) * ss - 0.5, (oy0 + 0.5) * ss - 0.5, (ox1 + 0.5) * ss - 0.5, (oy1 + 0.5) * ss - 0.5]
    ImageDraw.Draw(canvas).rectangle(cbox, fill=colour)
    if coverage is not None:
        ImageDraw.Draw(coverage).rectangle(cbox, fill=0)
    if stripes is not None:
        Painter(canvas, scale_ss).fill(
            [("polygon", [(cbox[0], cbox[1]), (cbox[2], cbox[1]), (cbox[2], cbox[3]), (cbox[0], cbox[3])])],
            colour, "stripes", stripes, origin=np.array(cbox[:2]), axis=np.array([0.0, 1.0]))


def project_keypoints(pose: dict, cam: Camera, width: int, height: int, occluder) -> np.ndarray:
    """COCO-17 (x, y, visibility) in output pixels; see the package docstring for visibility."""
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
