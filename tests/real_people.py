"""A small set of real people as re-ID crops, built from photos that ship inside installed packages.

Used by tests/test_pose.py and bench/keypoints_real.py (one builder for both). Three photos of
real people ship with our dependencies: scikit-image's `astronaut` (Eileen Collins) and `camera`
(the cameraman, greyscale, profile), and matplotlib's `grace_hopper`. All three are head and torso,
so the crops are re-ID crops of PARTIAL bodies (no legs), not full pedestrians: a detector box
around the person (varied aspect, position and cut), squashed to 64x128 as Market-1501 does,
optionally mirrored, blurred and JPEG-compressed at low quality, like the real crops that
keypoint estimators struggle with.

The keypoints in PEOPLE were marked by hand on the original photos (pixel centres, zoomed grids),
only where the joint is visible or clearly located; they go through the same box transform as
the pixels, so PCK can be measured on every crop.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from keyreid.data.keypoints import COCO17, write_sidecar

CROP_W, CROP_H = 64, 128

# name -> (package, path inside it, {keypoint: (x, y)} marked by hand on the original photo)
PEOPLE = {
    "astronaut": ("skimage", "data/astronaut.png", {
        "nose": (225, 125), "left_eye": (247, 102), "right_eye": (204, 98),
        "left_ear": (275, 120), "right_ear": (178, 118),
        "left_shoulder": (330, 245), "right_shoulder": (100, 245)}),
    "camera": ("skimage", "data/camera.png", {  # profile facing right: his right side shows
        "nose": (253, 164), "right_eye": (234, 148), "right_ear": (187, 140)}),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", {
        "nose": (265, 240), "left_eye": (307, 188), "right_eye": (221, 190),
        "left_ear": (367, 215), "right_ear": (161, 217),
        "left_shoulder": (440, 400), "right_shoulder": (95, 395)}),
}


def photo_path(name: str) -> Path:
    import importlib

    package, rel, _ = PEOPLE[name]
    return Path(importlib.import_module(package).__file__).parent / rel


def marked_keypoints(name: str) -> np.ndarray:
    """[17, 3] float32 on the original photo, v = 1 where marked."""
    kp = np.zeros((COCO17.num_keypoints, 3), np.float32)
    for joint, (x, y) in PEOPLE[name][2].items():
        kp[COCO17.index(joint)] = (x, y, 1.0)
    return kp


@dataclass(frozen=True)
class CropSpec:
    person: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 on the photo (continuous coordinates)
    mirror: bool
    blur: float  # Gaussian radius at 64x128
    quality: int  # JPEG quality


def crop_specs(n_per_person: int = 12, seed: int = 0) -> list[CropSpec]:
    """Boxes around each person: width 45-100% of the photo's height (squashed more or less when
    resized to 64x128), horizontal centre jittered by up to 15% of the box, top cut up to 15% into
    the head or the box starting above it; half mirrored; blur 0-1.2 px; JPEG quality 25-90."""
    rng = np.random.default_rng(seed)
    specs = []
    for name in PEOPLE:
        with Image.open(photo_path(name)) as im:
            w, h = im.size
        cx = float(np.mean([x for x, _ in PEOPLE[name][2].values()]))
        for _ in range(n_per_person):
            bw = rng.uniform(0.45, 1.0) * h
            x0 = cx - bw / 2 + rng.uniform(-0.15, 0.15) * bw
            x0 = float(np.clip(x0, 0, max(0.0, w - bw)))
            y0 = float(rng.uniform(0.0, 0.15) * h)
            specs.append(CropSpec(name, (x0, y0, min(w, x0 + bw), float(h)),
                                  bool(rng.random() < 0.5), float(rng.uniform(0.0, 1.2)),
                                  int(rng.integers(25, 91))))
    return specs


def render_crop(spec: CropSpec) -> tuple[Image.Image, np.ndarray]:
    """(64x128 RGB crop after JPEG round trip, its [17, 3] keypoints in crop pixel centres;
    keypoints outside the box are invisible)."""
    x0, y0, x1, y1 = spec.box
    with Image.open(photo_path(spec.person)) as im:
        photo = im.convert("RGB")
    crop = photo.resize((CROP_W, CROP_H), Image.BICUBIC, box=spec.box, reducing_gap=3.0)
    kp = marked_keypoints(spec.person)
    sx, sy = CROP_W / (x1 - x0), CROP_H / (y1 - y0)
    # pixel centre p on the photo sits at continuous p + 0.5; map the box onto the crop
    kp[:, 0] = (kp[:, 0] + 0.5 - x0) * sx - 0.5
    kp[:, 1] = (kp[:, 1] + 0.5 - y0) * sy - 0.5
    inside = ((kp[:, 0] >= -0.5) & (kp[:, 0] <= CROP_W - 0.5)
              & (kp[:, 1] >= -0.5) & (kp[:, 1] <= CROP_H - 0.5))
    kp[~inside, :] = 0.0
    if spec.mirror:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        vis = kp[:, 2] > 0
        kp[vis, 0] = CROP_W - 1 - kp[vis, 0]
        kp = kp[COCO17.flip_permutation()]
    if spec.blur > 0:
        crop = crop.filter(ImageFilter.GaussianBlur(spec.blur))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=spec.quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB"), kp


def write_real_crops(root: str | Path, n_per_person: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """The crops as a `folder` dataset (root/<person>/<i>.jpg, the JPEG bytes as rendered) plus
    root/reference.jsonl with the hand-marked keypoints; returns {key: keypoints}."""
    root = Path(root)
    truth = {}
    counts: dict[str, int] = {}
    for spec in crop_specs(n_per_person, seed):
        img, kp = render_crop(spec)
        i = counts[spec.person] = counts.get(spec.person, 0) + 1
        key = f"{spec.person}/{spec.person}_{i:03d}.jpg"
        (root / spec.person).mkdir(parents=True, exist_ok=True)
        # re-encoding the decoded JPEG at quality 95 keeps the low-quality artefacts as they are
        img.save(root / key, format="JPEG", quality=95)
        truth[key] = kp
    write_sidecar(root / "reference.jsonl", "coco17", truth)
    return truth
