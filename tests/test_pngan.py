"""PN-GAN: canonical poses (k-means over normalised training poses), the method (pngan) and its
re-ID use (rendering in the canonical poses, fused features)."""

import json
import math

import numpy as np
import pytest

from keyreid.data.synthetic import SynthConfig, generate
from keyreid.generation.canonical import (Canonical, Placement, canonical_from_dict, canonical_poses,
                                          normalise, placement, read_canonical, to_image,
                                          write_canonical)
from keyreid.generation.pose import OPENPOSE18, coco17_to_openpose18
from keyreid.errors import KeyreidError

# OpenPose-18 indices used below
NOSE, NECK, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP = 0, 1, 2, 5, 8, 11


@pytest.fixture(scope="module")
def synth_poses(tmp_path_factory):
    """Training poses (OpenPose-18, pixels) and body yaws of a 40-identity synthetic set."""
    root = tmp_path_factory.mktemp("pngan_synth")
    generate(root, SynthConfig(train_identities=40, test_identities=2, cameras=6, distractors=0,
                               junk=0, seed=3), workers=1)
    yaws = {p: v["yaw"] for p, v in json.loads((root / "synth.json").read_text())["images"].items()}
    rows = [json.loads(line) for line in (root / "keypoints.jsonl").read_text().splitlines()[1:]]
    rows = [r for r in rows if r["path"].startswith("bounding_box_train/")]
    kp = np.stack([coco17_to_openpose18(np.array(r["keypoints"])) for r in rows])
    return kp, np.array([yaws[r["path"]] for r in rows])


def view(pose: np.ndarray) -> str:
    """front / back / side of a normalised pose: the person's left shoulder is on the image's
    right (positive width) when they face the camera; a side view has a narrow torso."""
    width = pose[L_SHOULDER, 0] - pose[R_SHOULDER, 0]
    if abs(width) < 0.35:
        return "side"
    return "front" if width > 0 and pose[NOSE, 2] > 0 else "back" if width < 0 and pose[NOSE, 2] == 0 else "?"


# ------------------------------------------------------------------------------- canonical poses

def test_normalise_centres_on_the_torso_and_scales_by_its_length():
    kp = np.zeros((1, 18, 3), np.float32)
    kp[0, NECK] = [30, 20, 1]
    kp[0, R_HIP] = [26, 60, 1]
    kp[0, L_HIP] = [34, 60, 1]          # hip midpoint (30, 60): torso 40 px, centre (30, 40)
    kp[0, NOSE] = [30, 10, 1]
    kp[0, 4] = [99, 99, 0]               # invisible wrist: a zero row, whatever its coordinates
    out, idx = normalise(kp, OPENPOSE18)
    assert idx.tolist() == [0]
    np.testing.assert_allclose(out[0, NECK], [0, -0.5, 1])
    np.testing.assert_allclose(out[0, R_HIP], [-0.1, 0.5, 1])
    np.testing.assert_allclose(out[0, NOSE], [0, -0.75, 1])
    np.testing.assert_allclose(out[0, 4], [0, 0, 0])
    kp[0, L_HIP, 2] = 0                  # no torso: not usable
    assert len(normalise(kp, OPENPOSE18)[1]) == 0


def test_to_image_places_poses_like_the_training_crops(synth_poses):
    kp, _ = synth_poses
    place = placement(kp, 128, 64)
    # the synthetic crops: torso centre near the middle column, upper half; torso ~1/4 of height
    assert 0.4 < place.cx < 0.6 and 0.3 < place.cy < 0.45 and 0.18 < place.torso < 0.32
    pose = np.zeros((1, 18, 3), np.float32)
    pose[0, NECK] = [0, -0.5, 1]
    pose[0, 4] = [0.3, 0.2, 0]
    px = to_image(pose, 256, 128, Placement(cx=0.5, cy=0.4, torso=0.25))
    np.testing.assert_allclose(px[0, NECK], [64, 102.4 - 32, 1])   # (0.5 * 128, 0.4 * 256 - 0.5 * 64)
    np.testing.assert_allclose(px[0, 4], [0, 0, 0])


def test_canonical_poses_span_front_back_and_side_views(synth_poses):
    kp, yaw = synth_poses
    poses = canonical_poses(kp, k=8, seed=0)
    assert poses.shape == (8, 18, 3) and set(np.unique(poses[..., 2])) <= {0.0, 1.0}
    views = [view(p) for p in poses]
    assert {"front", "back", "side"} <= set(views), views
    # every canonical pose keeps its torso (the normalisation frame)
    assert (poses[:, [NECK, R_HIP, L_HIP], 2] == 1).all()
    # the training poses nearest each canonical pose face a common direction (yaw 0 = facing the
    # camera), and those directions cover the circle: at least 3 of the 4 quadrants
    norm, idx = normalise(kp, OPENPOSE18)
    both = (norm[:, None, :, 2] > 0) & (poses[None, :, :, 2] > 0)
    d = (((norm[:, None, :, :2] - poses[None, :, :, :2]) ** 2).sum(-1) * both).sum(-1) \
        + 0.25 * (norm[:, None, :, 2] != poses[None, :, :, 2]).sum(-1)
    nearest = d.argmin(1)
    quadrants = set()
    for c in range(8):
        a = np.radians(yaw[idx][nearest == c])
        if len(a) < 3:
            continue
        mean = math.degrees(math.atan2(np.sin(a).mean(), np.cos(a).mean())) % 360
        quadrants.add(int(((mean + 45) % 360) // 90))
    assert len(quadrants) >= 3, quadrants


def test_canonical_poses_are_deterministic_and_seeded(synth_poses):
    kp, _ = synth_poses
    a = canonical_poses(kp, k=8, seed=0)
    np.testing.assert_array_equal(a, canonical_poses(kp, k=8, seed=0))
    assert canonical_poses(kp, k=4, seed=0).shape == (4, 18, 3)
    with pytest.raises(KeyreidError, match="visible torso"):
        canonical_poses(kp[:5], k=8)


def test_write_and_read_canonical_round_trip(synth_poses, tmp_path):
    kp, _ = synth_poses
    poses = canonical_poses(kp, k=8, seed=0)
    place = placement(kp, 128, 64)
    canon = write_canonical(tmp_path / "canonical.json", poses, OPENPOSE18, tmp_path / "canonical.png",
                            place=place)
    back = read_canonical(tmp_path / "canonical.json")
    np.testing.assert_allclose(back.poses, poses, atol=1e-5)
    assert back.skeleton == "openpose18" and back.placement == place
    np.testing.assert_allclose(back.pixels(128, 64), canon.pixels(128, 64), atol=1e-3)
    from PIL import Image

    pic = np.asarray(Image.open(tmp_path / "canonical.png"))
    assert pic.shape == (128, 8 * 64 + 7 * 4, 3)
    for i in range(8):   # every tile has a drawn skeleton
        assert (pic[:, i * 68: i * 68 + 64].sum(-1) > 0).mean() > 0.02
    bad = {**canon.to_dict(), "poses": [[[0, 0, 1]]]}
    with pytest.raises(KeyreidError, match="poses must be finite"):
        canonical_from_dict(bad)
    with pytest.raises(KeyreidError, match="not found"):
        read_canonical(tmp_path / "missing.json")
