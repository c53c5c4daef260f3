"""Pose inputs of the generators: COCO -> OpenPose, left/right-aware flips, maps, skeleton images."""

import numpy as np
import pytest
import torch

from keyreid.data.keypoints import COCO17, CUB15, VERI20
from keyreid.generation.pose import (OPENPOSE18, coco17_to_openpose18, flip_keypoints,
                                     from_unit_range, pose_maps, pose_skeleton, skeleton_colours,
                                     skeleton_image, to_unit_range, wheel_colours)

H, W = 64, 32


def _coco_pose(rng=None) -> np.ndarray:
    """A COCO-17 person on a 64x32 image, every point visible at a distinct integer pixel."""
    kp = np.zeros((17, 3), np.float32)
    coords = {  # (x, y); the person faces the camera, so their right is the image's left
        "nose": (16, 6), "left_eye": (18, 5), "right_eye": (14, 5), "left_ear": (20, 6),
        "right_ear": (12, 6), "left_shoulder": (22, 14), "right_shoulder": (10, 14),
        "left_elbow": (24, 24), "right_elbow": (8, 24), "left_wrist": (25, 32),
        "right_wrist": (6, 33), "left_hip": (20, 34), "right_hip": (12, 34), "left_knee": (21, 46),
        "right_knee": (11, 46), "left_ankle": (22, 58), "right_ankle": (10, 59),
    }
    for name, (x, y) in coords.items():
        kp[COCO17.index(name)] = (x, y, 1.0)
    return kp


# ------------------------------------------------------------------------------ conversion

def test_openpose18_names_flip_pairs_and_limbs():
    assert OPENPOSE18.name == "openpose18" and OPENPOSE18.num_keypoints == 18
    assert OPENPOSE18.keypoints[:2] == ("nose", "neck") and OPENPOSE18.keypoints[17] == "left_ear"
    pairs = {tuple(sorted((OPENPOSE18.keypoints[a], OPENPOSE18.keypoints[b])))
             for a, b in OPENPOSE18.flip_pairs}
    assert pairs == {(f"left_{p}", f"right_{p}") for p in
                     ("shoulder", "elbow", "wrist", "hip", "knee", "ankle", "eye", "ear")}
    assert len(OPENPOSE18.limbs) == 17 and len(set(OPENPOSE18.limbs)) == 17
    # every joint is on some limb, and the limbs form one tree (17 edges, 18 nodes, connected)
    seen, frontier = {1}, [1]
    while frontier:
        j = frontier.pop()
        for a, b in OPENPOSE18.limbs:
            for u, v in ((a, b), (b, a)):
                if u == j and v not in seen:
                    seen.add(v)
                    frontier.append(v)
    assert seen == set(range(18))


def test_coco_to_openpose_mapping_by_name_and_neck():
    kp = _coco_pose()
    op = coco17_to_openpose18(kp)
    assert op.shape == (18, 3) and op.dtype == np.float32
    # by name: every OpenPose point except the neck is the COCO point of the same name
    for j, name in enumerate(OPENPOSE18.keypoints):
        if name != "neck":
            np.testing.assert_array_equal(op[j], kp[COCO17.index(name)])
    np.testing.assert_array_equal(op[1], [16, 14, 1])  # mid-shoulders
    # the literal table of methods.md (index18 <- index17)
    table = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
    for j18, j17 in enumerate(table):
        if j17 is not None:
            np.testing.assert_array_equal(op[j18], kp[j17])


def test_neck_needs_both_shoulders_and_missing_points_are_zero():
    kp = _coco_pose()
    kp[COCO17.index("left_shoulder"), 2] = 0.0
    kp[COCO17.index("nose")] = (5, 7, 0.0)  # invisible with coordinates: must come out all zero
    op = coco17_to_openpose18(kp)
    np.testing.assert_array_equal(op[1], 0)
    np.testing.assert_array_equal(op[OPENPOSE18.index("left_shoulder")], 0)
    np.testing.assert_array_equal(op[0], 0)
    kp = _coco_pose()
    kp[COCO17.index("left_shoulder"), 2] = 0.4
    kp[COCO17.index("right_shoulder"), 2] = 0.8
    assert coco17_to_openpose18(kp)[1, 2] == pytest.approx(0.4)  # the weaker shoulder's confidence
    with pytest.raises(ValueError):
        coco17_to_openpose18(np.zeros((18, 3)))


def test_pose_skeleton_choice():
    skel, conv = pose_skeleton(COCO17)
    assert skel is OPENPOSE18 and conv is coco17_to_openpose18
    for other in (CUB15, VERI20, OPENPOSE18):
        skel, conv = pose_skeleton(other)
        assert skel is other
        kp = np.tile(np.array([[3.0, 4.0, 1.0]], np.float32), (other.num_keypoints, 1))
        kp[0] = (7, 8, 0)
        out = conv(kp)
        np.testing.assert_array_equal(out[1:], kp[1:])
        np.testing.assert_array_equal(out[0], 0)
        assert out is not kp


# ------------------------------------------------------------------------------ flips and maps

def test_pose_maps_peaks_and_empty_channels():
    kp = coco17_to_openpose18(_coco_pose())
    kp[OPENPOSE18.index("left_ear"), 2] = 0.0       # invisible
    kp[OPENPOSE18.index("right_ear")] = (W + 3, 5, 1)  # visible but outside the image
    maps = pose_maps(kp, H, W, sigma=2.0)
    assert maps.shape == (18, H, W) and maps.dtype == np.float32
    for j in range(18):
        if kp[j, 2] > 0 and kp[j, 0] < W:
            y, x = np.unravel_index(np.argmax(maps[j]), maps[j].shape)
            assert (x, y) == (kp[j, 0], kp[j, 1])
            assert maps[j, y, x] == 1.0
            # sigma in pixels: one pixel away the value is exp(-1 / (2 sigma^2))
            assert maps[j, y, x - 1] == pytest.approx(np.exp(-1 / 8), rel=1e-6)
        else:
            assert not maps[j].any()


def test_flip_keypoints_permutes_left_right():
    kp = coco17_to_openpose18(_coco_pose())
    kp[OPENPOSE18.index("left_wrist")] = 0.0
    flipped = flip_keypoints(kp, W, OPENPOSE18)
    rs, ls = OPENPOSE18.index("right_shoulder"), OPENPOSE18.index("left_shoulder")
    # the right-shoulder channel of the flipped image is where the left shoulder was, mirrored
    np.testing.assert_array_equal(flipped[rs], [W - 1 - kp[ls, 0], kp[ls, 1], 1])
    np.testing.assert_array_equal(flipped[ls], [W - 1 - kp[rs, 0], kp[rs, 1], 1])
    np.testing.assert_array_equal(flipped[OPENPOSE18.index("right_wrist")], 0)  # missing stays (0,0,0)
    np.testing.assert_array_equal(flipped[0], [W - 1 - kp[0, 0], kp[0, 1], 1])  # nose: no partner
    np.testing.assert_allclose(flip_keypoints(flipped, W, OPENPOSE18), kp)  # an involution


@pytest.mark.parametrize("skeleton", [OPENPOSE18, CUB15, VERI20])
def test_maps_of_flipped_keypoints_are_mirrored_maps_with_channels_permuted(skeleton):
    rng = np.random.default_rng(3)
    kp = np.column_stack([rng.uniform(0, W - 1, skeleton.num_keypoints),
                          rng.uniform(0, H - 1, skeleton.num_keypoints),
                          (rng.random(skeleton.num_keypoints) > 0.2).astype(np.float32)]).astype(np.float32)
    kp[kp[:, 2] == 0] = 0
    maps = pose_maps(kp, H, W, 3.0)
    flipped_maps = pose_maps(flip_keypoints(kp, W, skeleton), H, W, 3.0)
    expected = maps[skeleton.flip_permutation()][:, :, ::-1]
    np.testing.assert_allclose(flipped_maps, expected, atol=1e-6)
    if skeleton.flip_pairs:
        # without the permutation they differ: the test would catch FD-GAN's mirror-only flip
        assert not np.allclose(flipped_maps, maps[:, :, ::-1], atol=1e-3)


# ------------------------------------------------------------------------------ skeleton image

def _colour_mask(img, colour):
    return (img == np.asarray(colour, np.uint8)).all(axis=-1)


def test_colours_are_openposes_and_distinct():
    wheel = wheel_colours(18)
    np.testing.assert_array_equal(wheel[:4], [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0]])
    np.testing.assert_array_equal(wheel[12], [0, 0, 255])
    np.testing.assert_array_equal(wheel[17], [255, 0, 85])
    joints, limbs = skeleton_colours(OPENPOSE18)
    colours = {tuple(c) for c in joints} | {tuple(c) for c in limbs}
    assert len(colours) == 18 + 17 and (0, 0, 0) not in colours


def test_skeleton_image_draws_visible_limbs_and_joints_only():
    kp = coco17_to_openpose18(_coco_pose())
    joints, limbs = skeleton_colours(OPENPOSE18)
    full = skeleton_image(kp, OPENPOSE18, H, W)
    assert full.shape == (H, W, 3) and full.dtype == np.uint8
    for j in range(18):  # each joint's disc is centred on it
        assert (full[int(kp[j, 1]), int(kp[j, 0])] == joints[j]).all()
    # the right forearm (limb 3: right elbow -> right wrist) has its colour mid-way
    re_, rw = OPENPOSE18.index("right_elbow"), OPENPOSE18.index("right_wrist")
    assert OPENPOSE18.limbs[3] == (re_, rw)
    mid = np.round((kp[re_, :2] + kp[rw, :2]) / 2).astype(int)
    assert (full[mid[1], mid[0]] == limbs[3]).all()
    # hide the right wrist: limb 3 draws no pixel of its colour, the wrist disc is gone
    kp_hidden = kp.copy()
    kp_hidden[rw] = 0
    part = skeleton_image(kp_hidden, OPENPOSE18, H, W)
    assert _colour_mask(full, limbs[3]).any() and not _colour_mask(part, limbs[3]).any()
    assert not _colour_mask(part, joints[rw]).any()
    # everything else is unchanged away from the forearm
    assert _colour_mask(part, limbs[2]).sum() == _colour_mask(full, limbs[2]).sum()
    assert not skeleton_image(np.zeros((18, 3)), OPENPOSE18, H, W).any()  # all invisible: black


def test_skeleton_thickness_scales_with_height():
    kp = np.zeros((18, 3), np.float32)
    kp[OPENPOSE18.index("right_hip")] = (10, 20, 1)
    kp[OPENPOSE18.index("right_knee")] = (10, 100, 1)  # a vertical limb, index 7
    _, limbs = skeleton_colours(OPENPOSE18)

    def band_width(h):
        img = skeleton_image(kp, OPENPOSE18, h, 40)
        return int(_colour_mask(img, limbs[7])[60].sum())  # a row crossing the limb's middle

    assert band_width(128) == 5   # 4 px wide: |dx| <= 2 covers 5 pixel centres
    assert band_width(256) == 9   # 8 px wide
    assert int(_colour_mask(skeleton_image(kp, OPENPOSE18, 128, 40, thickness=1), limbs[7])[60].sum()) == 1


# ------------------------------------------------------------------------------ image range

def test_unit_range_round_trip_is_exact():
    values = np.arange(256, dtype=np.uint8)
    img = np.stack([values.reshape(16, 16)] * 3, axis=-1)
    t = to_unit_range(img)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert t.min().item() == -1.0 and t.max().item() == 1.0
    assert t[0, 0, 1].item() == pytest.approx(1 / 127.5 - 1)
    np.testing.assert_array_equal(from_unit_range(t), img)
    batch = torch.stack([t, t.flip(-1)])
    back = from_unit_range(batch)
    assert back.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(back[1], img[:, ::-1])
    # out-of-range generator output is clamped, not wrapped
    np.testing.assert_array_equal(from_unit_range(torch.full((3, 1, 1), 1.7))[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(from_unit_range(torch.full((3, 1, 1), -3.0))[0, 0], [0, 0, 0])
    with pytest.raises(ValueError):
        to_unit_range(img.astype(np.float32))
