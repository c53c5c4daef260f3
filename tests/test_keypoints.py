"""Skeletons, sidecar I/O, heatmaps and keypoint-aware transforms."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from keyreid.data.keypoints import (COCO17, CUB15, VERI20, SidecarAppender, heatmap_coordinates,
                                    read_sidecar, render_heatmaps, write_sidecar)
from keyreid.data.transforms import KeypointTransform, TransformConfig
from keyreid.errors import DataError


def test_skeleton_flip_pairs_are_left_right_mirrors():
    for skel in (COCO17, CUB15, VERI20):
        perm = skel.flip_permutation()
        assert sorted(perm) == list(range(skel.num_keypoints))
        assert (perm[perm] == np.arange(skel.num_keypoints)).all()  # an involution
        for a, b in skel.flip_pairs:
            na, nb = skel.keypoints[a], skel.keypoints[b]
            assert na.replace("left", "right") == nb or nb.replace("left", "right") == na
    assert COCO17.num_keypoints == 17 and CUB15.num_keypoints == 15 and VERI20.num_keypoints == 20
    assert COCO17.flip_permutation()[COCO17.index("left_wrist")] == COCO17.index("right_wrist")
    assert CUB15.keypoints[1] == "beak" and CUB15.keypoints[14] == "throat"


def test_sidecar_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    entries = {f"train/{i:04d}.jpg": np.c_[rng.uniform(0, 60, (15, 2)), rng.uniform(0, 1, 15)]
               for i in range(5)}
    write_sidecar(tmp_path / "kp.jsonl", "cub15", entries)
    name, back = read_sidecar(tmp_path / "kp.jsonl")
    assert name == "cub15" and set(back) == set(entries)
    for k in entries:
        np.testing.assert_allclose(back[k], entries[k], atol=1e-3)


@pytest.mark.parametrize("line,problem", [
    ('{"path": "a.jpg", "keypoints": [[1, 2, 1]]}', "expected 17 keypoints, got 1"),
    ('{"path": "a.jpg", "keypoints": ' + json.dumps([[1, 2, 1.5]] * 17) + "}", "visibility of keypoint 0 is 1.5"),
    ('{"path": "a.jpg", "keypoints": ' + json.dumps([[1, 2]] * 17) + "}", "shape [17, 3]"),
    ('{"path": "a.jpg", "keypoints": ' + json.dumps([[1, "nan", 1]] * 17).replace('"nan"', "NaN") + "}",
     "NaN"),
    ('{"keypoints": []}', "needs 'path'"),
    ("{not json", "line 2: not valid JSON"),
])
def test_sidecar_errors_name_file_line_and_problem(tmp_path, line, problem):
    f = tmp_path / "kp.jsonl"
    f.write_text('{"format": "keyreid-keypoints", "version": 1, "skeleton": "coco17"}\n' + line + "\n")
    with pytest.raises(DataError) as e:
        read_sidecar(f)
    assert str(f) in str(e.value) and problem in str(e.value)


def test_sidecar_rejects_foreign_file_and_duplicates(tmp_path):
    f = tmp_path / "kp.jsonl"
    f.write_text('{"hello": 1}\n')
    with pytest.raises(DataError, match="not a keyreid keypoint sidecar"):
        read_sidecar(f)
    row = json.dumps({"path": "a.jpg", "keypoints": [[1, 1, 1]] * 17})
    f.write_text('{"format": "keyreid-keypoints", "version": 1, "skeleton": "coco17"}\n' + row + "\n" + row + "\n")
    with pytest.raises(DataError, match="line 3: duplicate entry"):
        read_sidecar(f)


def test_appender_resumes_after_killed_write(tmp_path):
    f = tmp_path / "kp.jsonl"
    kp = np.ones((17, 3), np.float32)
    with SidecarAppender(f, "coco17") as app:
        app.append("a.jpg", kp)
        app.append("b.jpg", kp * 2 / 2)
    with open(f, "a") as fh:  # a writer killed mid-line
        fh.write('{"path": "c.jpg", "keypoi')
    with pytest.raises(DataError):
        read_sidecar(f)
    assert set(read_sidecar(f, tolerate_truncated_tail=True)[1]) == {"a.jpg", "b.jpg"}
    with SidecarAppender(f, "coco17") as app:
        assert app.done == {"a.jpg", "b.jpg"}
        app.append("a.jpg", kp * 0)  # finished entries are never rewritten
        app.append("c.jpg", kp)
    _, entries = read_sidecar(f)
    assert set(entries) == {"a.jpg", "b.jpg", "c.jpg"}
    assert entries["a.jpg"][0, 2] == 1.0
    with pytest.raises(DataError, match="skeleton is 'coco17'"):
        SidecarAppender(f, "cub15")


def test_heatmap_peak_position_and_visibility():
    kp = np.array([[10.0, 20.0, 1.0], [33.0, 5.0, 0.0], [100.0, 5.0, 1.0], [1.5, 1.5, 0.4]])
    maps, w = render_heatmaps(kp, (64, 32), stride=4, sigma=1.5)
    assert maps.shape == (4, 16, 8)
    np.testing.assert_allclose(w, [1.0, 0.0, 0.0, 0.4], rtol=1e-6)
    assert not maps[1].any() and not maps[2].any()
    # pixel 10 lies in cell 2 (pixels 8..11, centre 9.5); its heatmap coordinate is 2.125
    np.testing.assert_allclose(heatmap_coordinates([10.0, 20.0], 4), [2.125, 4.625])
    cy, cx = np.unravel_index(maps[0].argmax(), maps[0].shape)
    assert (cy, cx) == (5, 2)
    expected = np.exp(-((2 - 2.125) ** 2 + (5 - 4.625) ** 2) / (2 * 1.5**2))
    assert maps[0, 5, 2] == pytest.approx(expected, rel=1e-6)


def _marked_image(h, w, x, y, r=3):
    img = np.zeros((h, w, 3), np.uint8)
    img[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = 255
    return Image.fromarray(img)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(40, 200), w=st.integers(20, 100), fx=st.floats(0.05, 0.95), fy=st.floats(0.05, 0.95),
       seed=st.integers(0, 2**31 - 1), train=st.booleans())
def test_keypoint_lands_on_the_pixel_it_marked(h, w, fx, fy, seed, train):
    x, y = int(fx * (w - 1)), int(fy * (h - 1))
    img = _marked_image(h, w, x, y, r=max(3, h // 12, w // 6))
    kp = np.zeros((17, 3), np.float32)
    left = COCO17.index("left_wrist")
    kp[left] = [x, y, 1]
    cfg = TransformConfig(height=128, width=64, erase_prob=0.0)
    torch.manual_seed(seed)
    out, kp2 = KeypointTransform(cfg, train, COCO17.flip_permutation())(img, kp)
    # after a flip the marked point is the right wrist; at most one of the two is visible
    right = COCO17.index("right_wrist")
    carriers = [i for i in (left, right) if kp2[i, 2] > 0]
    assert len(carriers) <= 1
    if not carriers:  # only allowed when the crop pushed it out of the image (the other wrist,
        # never marked, stays invisible wherever its coordinates land)
        assert any(px < -0.5 or py < -0.5 or px > 63.5 or py > 127.5 for px, py, _ in kp2[[left, right]])
        return
    px, py, _ = kp2[carriers[0]]
    assert out[:, int(round(py)), int(round(px))].min() > 1.0  # bright (normalised) pixel


def test_flip_swaps_left_and_right():
    img = _marked_image(128, 64, 10, 60)
    kp = np.zeros((17, 3), np.float32)
    kp[COCO17.index("left_wrist")] = [10, 60, 1]
    cfg = TransformConfig(height=128, width=64, flip_prob=1.0, pad=0, erase_prob=0.0)
    out, kp2 = KeypointTransform(cfg, True, COCO17.flip_permutation())(img, kp)
    right = COCO17.index("right_wrist")
    np.testing.assert_allclose(kp2[right], [53, 60, 1])
    assert kp2[COCO17.index("left_wrist"), 2] == 0
    assert out[0, 60, 53] > 1.0 and out[0, 60, 10] < 0


def test_test_transform_is_deterministic_and_keeps_geometry():
    img = _marked_image(64, 32, 8, 16, r=1)
    kp = np.zeros((17, 3), np.float32)
    kp[0] = [8, 16, 1]
    cfg = TransformConfig(height=128, width=64)
    t = KeypointTransform(cfg, False, COCO17.flip_permutation())
    a, k = t(img, kp)
    b, _ = t(img, kp)
    assert torch.equal(a, b)
    np.testing.assert_allclose(k[0], [16.5, 32.5, 1])  # pixel centre 8 -> (8 + .5) * 2 - .5
