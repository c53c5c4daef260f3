"""Pose estimation workflow: crop geometry, resumable estimation, PCK, sidecar checks, CLI,
the offline mediapipe estimator on a few images, and the rtmpose wiring up to its download."""

from __future__ import annotations

import importlib.util
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from keyreid.data.datasets.base import build_dataset
from keyreid.data.keypoints import COCO17, read_sidecar, write_sidecar
from keyreid.pose import (EstimatorUnavailable, PoseEstimator, check_sidecar, dataset_images,
                          estimate_dataset, pck, plan_canvas, register_estimator, render_canvas)
from keyreid.pose.estimators import ESTIMATORS, finish_keypoints

HAVE_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
HAVE_RTMLIB = importlib.util.find_spec("rtmlib") is not None and \
    importlib.util.find_spec("onnxruntime") is not None


# --------------------------------------------------------------------------------------------
# Crop geometry


@pytest.mark.parametrize("size,kw,fill", [
    ((64, 128), dict(min_long_side=256, canvas="square", margin=0.25), "black"),
    ((64, 128), dict(min_long_side=320, canvas="plain", margin=0.1), "black"),  # scale 2.5
    ((50, 37), dict(min_long_side=256, canvas="square", margin=0.0), "black"),  # odd sizes
    ((64, 128), dict(min_long_side=256, canvas="tall", height_factor=2.0), "black"),
    ((37, 91), dict(min_long_side=256, canvas="tall", height_factor=1.7), "edge"),
])
def test_canvas_mapping_is_exact_for_a_rendered_dot(size, kw, fill):
    w, h = size
    geom = plan_canvas(w, h, **kw)
    assert geom.canvas_width >= geom.scaled_width and max(geom.scaled_width, geom.scaled_height) >= kw["min_long_side"]
    if kw["canvas"] == "square":
        assert geom.canvas_width == geom.canvas_height
    pts = np.array([[w * 0.3, h * 0.6], [w - 5, 4]], dtype=float).round()
    np.testing.assert_allclose(geom.to_original(geom.to_canvas(pts)), pts, atol=1e-9)
    for x, y in pts.astype(int):
        img = np.zeros((h, w, 3), np.uint8)
        img[y, x] = 255
        canvas = np.asarray(render_canvas(Image.fromarray(img), geom, fill)).astype(float)[:, :, 0]
        canvas = np.clip(canvas, 0, None)
        ys, xs = np.nonzero(canvas)
        wts = canvas[ys, xs]
        # centroid in pixel indices -> continuous coordinates (+0.5) -> original pixel centres
        cx, cy = (xs * wts).sum() / wts.sum() + 0.5, (ys * wts).sum() / wts.sum() + 0.5
        back = geom.to_original([cx, cy])
        np.testing.assert_allclose(back, [x, y], atol=0.08)


def test_identity_canvas_and_edges():
    geom = plan_canvas(64, 128, min_long_side=0, canvas="plain", margin=0.0)
    assert (geom.canvas_width, geom.canvas_height, geom.offset_x, geom.offset_y) == (64, 128, 0, 0)
    # continuous 0 is the left edge = pixel centre -0.5; a canvas of width W ends at W - 0.5
    np.testing.assert_allclose(geom.to_original([[0, 0], [64, 128]]), [[-0.5, -0.5], [63.5, 127.5]])
    geom = plan_canvas(64, 128, min_long_side=256, canvas="square", margin=0.25)
    assert (geom.scaled_width, geom.scaled_height) == (128, 256)
    assert geom.canvas_width == 256 + 2 * 64 and geom.offset_x == (384 - 128) // 2
    np.testing.assert_allclose(geom.to_original([[geom.offset_x, geom.offset_y]]), [[-0.5, -0.5]])
    # points the estimator puts on the padding are invisible in the entry
    kp = finish_keypoints(geom.to_original([[10, 10], [192, 192]]), np.array([0.9, 0.8]), geom)
    assert kp[0, 2] == 0 and kp[1, 2] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        plan_canvas(0, 10)


def test_blazepose_mapping_names():
    from keyreid.pose.mediapipe_estimator import BLAZEPOSE_TO_COCO17

    blaze = ["nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
             "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
             "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
             "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
             "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee",
             "left_ankle", "right_ankle", "left_heel", "right_heel", "left_foot_index",
             "right_foot_index"]
    assert [blaze[i] for i in BLAZEPOSE_TO_COCO17] == list(COCO17.keypoints)


# --------------------------------------------------------------------------------------------
# Workflow with a fake estimator


class OracleEstimator(PoseEstimator):
    """Returns the true keypoints (looked up by image content) jittered, None for clutter."""

    name = "oracle"
    skeleton = COCO17
    batch_size = 4

    def __init__(self, truth: dict[bytes, np.ndarray], jitter: float = 0.0, seed: int = 0):
        self.truth, self.jitter = truth, jitter
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def estimate(self, images):
        out = []
        for im in images:
            self.calls += 1
            kp = self.truth[np.asarray(im).tobytes()]
            if not (kp[:, 2] > 0).any():
                out.append(None)
                continue
            kp = kp.copy()
            kp[:, :2] += self.jitter * self.rng.standard_normal((17, 2))
            kp[:, 2] = np.where(kp[:, 2] > 0, 0.9, 0.0)
            out.append(kp)
        return out


class Interrupting(PoseEstimator):
    """Wraps an estimator and raises once `after` images have been estimated."""

    name = "interrupting"
    skeleton = COCO17
    batch_size = 4

    def __init__(self, inner, after):
        self.inner, self.after, self.seen = inner, after, 0

    def estimate(self, images):
        if self.seen + len(images) > self.after:
            raise KeyboardInterrupt  # as a user pressing Ctrl-C mid-batch
        self.seen += len(images)
        return self.inner.estimate(images)


@pytest.fixture(scope="module")
def synth(tiny_synth):
    ds = build_dataset("market1501", tiny_synth, num_cameras=3)
    _, true = read_sidecar(Path(tiny_synth) / "keypoints.jsonl")
    from keyreid.data.loader import read_image

    truth = {np.asarray(read_image(p)).tobytes(): true[k] for k, p in dataset_images(ds)}
    return ds, true, truth


def test_estimate_writes_every_image_and_counts_no_person(synth, tmp_path):
    ds, true, truth = synth
    out = tmp_path / "kp.jsonl"
    s = estimate_dataset(ds, out, OracleEstimator(truth), progress=False)
    name, got = read_sidecar(out)
    keys = [k for k, _ in dataset_images(ds)]
    assert name == "coco17" and sorted(got) == sorted(keys) and s.images == len(keys)
    empty = [k for k in keys if not (true[k][:, 2] > 0).any()]
    assert s.no_person == len(empty) > 0 and s.estimated == len(keys) and s.already_done == 0
    for k in empty:
        assert not got[k][:, 2].any()
    assert pck(out, Path(ds.root) / "keypoints.jsonl").overall == pytest.approx(1.0)
    # a rerun over a finished sidecar estimates nothing
    est = OracleEstimator(truth)
    s2 = estimate_dataset(ds, out, est, progress=False)
    assert s2.already_done == len(keys) and s2.estimated == 0 and est.calls == 0


def test_interrupted_run_resumes_to_the_same_file(synth, tmp_path):
    ds, _, truth = synth
    full = tmp_path / "full.jsonl"
    estimate_dataset(ds, full, OracleEstimator(truth, jitter=1.0, seed=3), batch_size=4,
                     progress=False)
    part = tmp_path / "part.jsonl"
    inner = OracleEstimator(truth, jitter=1.0, seed=3)
    with pytest.raises(KeyboardInterrupt):
        estimate_dataset(ds, part, Interrupting(inner, after=10), batch_size=4, progress=False)
    first = part.read_bytes()
    _, done = read_sidecar(part)
    assert len(done) == 8  # two whole batches; the third never reached the file
    # simulate a kill in the middle of writing a line as well
    with open(part, "ab") as f:
        f.write(b'{"path":"bounding_box_train/x.jpg","keypo')
    s = estimate_dataset(ds, part, inner, batch_size=4, progress=False)  # same RNG stream
    assert s.already_done == 8 and s.estimated == s.images - 8
    assert part.read_bytes().startswith(first)  # finished entries untouched
    assert part.read_bytes() == full.read_bytes()


def test_estimator_skeleton_must_match_dataset(synth, tmp_path):
    ds, _, truth = synth
    from dataclasses import replace

    from keyreid.errors import DataError

    with pytest.raises(DataError, match="cub15"):
        estimate_dataset(replace(ds, skeleton="cub15"), tmp_path / "x.jsonl",
                         OracleEstimator(truth), progress=False)


def test_min_confidence_applies_to_estimated_sidecar(synth, tmp_path):
    ds, _, truth = synth
    out = tmp_path / "kp.jsonl"
    estimate_dataset(ds, out, OracleEstimator(truth), progress=False)
    name, entries = read_sidecar(out)
    key = next(k for k, kp in entries.items() if (kp[:, 2] > 0).sum() > 2)
    entries[key][0, 2] = 0.3  # one low-confidence keypoint
    write_sidecar(out, name, entries)
    ds2 = build_dataset("market1501", ds.root, num_cameras=3)
    assert ds2.attach_keypoints(out, min_confidence=0.5) == len(dataset_images(ds2))
    sample = next(s for s in (*ds2.train, *ds2.query, *ds2.gallery)
                  if Path(s.path).resolve() == (Path(ds.root) / key).resolve())
    assert sample.keypoints[0, 2] == 0 and (sample.keypoints[1:, 2] == entries[key][1:, 2]).all()


# --------------------------------------------------------------------------------------------
# PCK and check


def _person(x0=10.0, y0=20.0, size=50.0):
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = x0 + np.linspace(0, size / 2, 17)
    kp[:, 1] = y0 + np.linspace(0, size, 17)  # box height = size, width = size/2
    kp[:, 2] = 1.0
    return kp


def test_pck_definition():
    gt = {"a.jpg": _person(), "b.jpg": _person(), "c.jpg": _person()}
    gt["b.jpg"][3, 2] = 0  # not visible in the reference: never counted
    pred = {k: v.copy() for k, v in gt.items()}
    pred["a.jpg"][0, 0] += 4.9  # within 0.1 * 50
    pred["a.jpg"][1, 0] += 5.1  # outside
    pred["b.jpg"][2, 2] = 0.0  # predicted invisible: a miss
    pred["b.jpg"][3, :2] += 100  # reference-invisible: ignored
    del pred["c.jpg"]
    r = pck(("coco17", pred), ("coco17", gt), keys=sorted(gt))
    assert r.images == 3 and r.missing == 1 and r.detected == 2
    assert r.counted == 17 + 16 + 17 and r.correct == 16 + 15
    assert r.overall == pytest.approx(31 / 50)
    assert r.overall_detected == pytest.approx(31 / 33)
    assert r.per_keypoint["left_eye"] == pytest.approx(1 / 3)  # a: too far, c: missing
    assert r.per_keypoint["nose"] == pytest.approx(2 / 3)
    assert r.per_keypoint["left_ear"] == pytest.approx(1 / 2)  # b's ear not counted
    # default keys: only images the prediction has
    assert pck(("coco17", pred), ("coco17", gt)).images == 2
    # confidence threshold: 0.9 < 0.95 makes everything invisible
    pred2 = {k: v.copy() for k, v in pred.items()}
    for v in pred2.values():
        v[:, 2] = np.where(v[:, 2] > 0, 0.9, 0)
    assert pck(("coco17", pred2), ("coco17", gt), min_confidence=0.95).overall == 0.0
    with pytest.raises(Exception, match="skeletons differ"):
        pck(("cub15", {}), ("coco17", gt))


def test_check_sidecar_reports_coverage_bounds_and_pck(synth, tmp_path):
    ds, true, truth = synth
    keys = [k for k, _ in dataset_images(ds)]
    entries = {k: true[k].copy() for k in keys[:-3]}  # three missing
    k0 = next(k for k in keys if true[k][5, 2] > 0)
    entries[k0][5, :2] = (500.0, 10.0)  # visible, right of a 64-pixel-wide image
    entries["bounding_box_train/not_there.jpg"] = true[keys[1]]
    side = tmp_path / "s.jsonl"
    write_sidecar(side, "coco17", entries)
    rep = check_sidecar(side, ds, reference=Path(ds.root) / "keypoints.jsonl")
    assert rep.dataset_images == len(keys) and rep.missing == sorted(keys[-3:])
    assert rep.extra == ["bounding_box_train/not_there.jpg"]
    assert len(rep.out_of_image) == 1 and "left_shoulder" in rep.out_of_image[0]
    assert not rep.ok and rep.pck is not None and 0.9 < rep.pck.overall < 1.0
    assert 0 < rep.visibility["nose"] < 1
    # command line: exit 1 on problems, JSON output parses
    from keyreid.commands.keypoints import app

    res = CliRunner().invoke(app, ["check", str(side), "--root", str(ds.root), "-d", "market1501",
                                   "--option", "num_cameras=3", "-r",
                                   str(Path(ds.root) / "keypoints.jsonl"), "--json"])
    assert res.exit_code == 1, res.output
    assert json.loads(res.output)["entries"] == len(entries)
    res = CliRunner().invoke(app, ["check", str(Path(ds.root) / "keypoints.jsonl"), "--root",
                                   str(ds.root), "-d", "market1501", "--option", "num_cameras=3"])
    assert res.exit_code == 0, res.output
    assert "coverage" in res.output


def test_cli_estimate_resume_and_show(synth, tmp_path, monkeypatch):
    ds, _, truth = synth
    if "test-oracle" not in ESTIMATORS:
        register_estimator("test-oracle")(lambda batch_size=16: OracleEstimator(truth))
    from keyreid.commands.keypoints import app

    out = tmp_path / "kp.jsonl"
    args = ["estimate", str(ds.root), "-d", "market1501", "--option", "num_cameras=3", "-o",
            str(out), "-e", "test-oracle", "--no-progress"]
    res = CliRunner().invoke(app, args + ["--limit", "5"])
    assert res.exit_code == 0, res.output
    assert len(read_sidecar(out)[1]) == 5
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "5 already in the sidecar" in res.output.replace("\n", " ")
    png = tmp_path / "grid.png"
    res = CliRunner().invoke(app, ["show", str(ds.root), str(out), "--n", "6", "-o", str(png),
                                   "--columns", "3"])
    assert res.exit_code == 0, res.output
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 3 * 64 * 2
    res = CliRunner().invoke(app, ["estimate", str(ds.root), "-d", "market1501", "-o", str(out),
                                   "-e", "nope"])
    assert res.exit_code == 2 and "unknown pose estimator" in res.output


def test_draw_skeleton_skips_invisible():
    from keyreid.viz.skeleton import draw_skeleton

    img = Image.new("RGB", (32, 64), (128, 128, 128))
    kp = _person(2, 2, 40)
    kp[:, 2] = 0
    plain = np.asarray(draw_skeleton(img, kp, COCO17, scale=2))
    assert (plain == 128).all()  # nothing visible: nothing drawn
    kp[5, 2] = kp[6, 2] = 1.0
    drawn = np.asarray(draw_skeleton(img, kp, COCO17, scale=2))
    assert (drawn != 128).any()


# --------------------------------------------------------------------------------------------
# Real estimators


@pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe is not installed (pip install --no-deps "
                                               "mediapipe==0.10.21; see keyreid.pose.mediapipe_estimator)")
def test_mediapipe_offline_on_a_few_images(synth, tmp_path):
    from keyreid.pose import build_estimator

    ds, true, _ = synth
    people = [(k, p) for k, p in dataset_images(ds) if (true[k][:, 2] > 0).sum() >= 12][:6]
    from keyreid.data.loader import read_image

    with build_estimator("mediapipe") as est:
        results = est.estimate([read_image(p) for _, p in people])
    assert len(results) == len(people)
    found = [r for r in results if r is not None]
    for r, (k, p) in zip(results, people):
        if r is None:
            continue
        assert r.shape == (17, 3) and r.dtype == np.float32
        vis = r[:, 2] > 0
        assert (r[vis, 0] >= -0.5).all() and (r[vis, 0] <= 63.5).all()
        assert (r[vis, 1] >= -0.5).all() and (r[vis, 1] <= 127.5).all()
    assert found, "mediapipe found nobody in six synthetic people"
    # roughly in the right place: median error under a quarter of the person's height
    errs = []
    for r, (k, _) in zip(results, people):
        if r is not None:
            vis = (r[:, 2] > 0) & (true[k][:, 2] > 0)
            errs.extend(np.linalg.norm(r[vis, :2] - true[k][vis, :2], axis=1))
    assert np.median(errs) < 0.25 * 128


@pytest.mark.skipif(not HAVE_RTMLIB, reason="rtmlib / onnxruntime not installed")
def test_rtmpose_download_failure_is_explained(monkeypatch):
    import rtmlib.tools.file as rtm_file

    from keyreid.pose import build_estimator

    calls = []

    def no_network(url, *a, **k):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(rtm_file, "download_checkpoint", no_network)
    with pytest.raises(EstimatorUnavailable) as err:
        build_estimator("rtmpose", model="rtmpose-m")
    msg = str(err.value)
    assert calls and calls[0].endswith(".zip") and "rtmpose-m" in calls[0]
    assert "internet" in msg and "--model" in msg and "URLError" in msg
    with pytest.raises(EstimatorUnavailable, match="no such ONNX model file"):
        build_estimator("rtmpose", model="/nonexistent/model.onnx")


@pytest.mark.skipif(not HAVE_RTMLIB, reason="rtmlib / onnxruntime not installed")
def test_rtmpose_builds_the_call_and_maps_coordinates(monkeypatch, tmp_path):
    import rtmlib

    from keyreid.pose import build_estimator

    made = {}

    class FakeRTMPose:
        def __init__(self, **kwargs):
            made.update(kwargs)

        def __call__(self, image, bboxes):
            made["image_shape"], made["bboxes"] = image.shape, bboxes
            x1, y1, x2, y2 = bboxes[0]
            # keypoints at canvas pixel centres of the box corners / centre
            kp = np.tile([[x1 + 0.5 * (x2 - x1) - 0.5, y1 + 0.5 * (y2 - y1) - 0.5]], (17, 1))
            kp[0] = (x1, y1)
            return kp[None], np.full((1, 17), 0.8)

    monkeypatch.setattr(rtmlib, "RTMPose", FakeRTMPose)
    onnx = tmp_path / "end2end.onnx"
    onnx.write_bytes(b"not really a model")
    for kw in ({}, {"min_long_side": 256, "square": True, "margin": 0.25}):
        made.clear()
        est = build_estimator("rtmpose", model=str(onnx), **kw)
        assert made["onnx_model"] == str(onnx) and made["model_input_size"] == (192, 256)
        assert made["backend"] == "onnxruntime"
        (kp,) = est.estimate([Image.new("RGB", (64, 128))])
        s = 256 / 128 if kw else 1.0
        # the canvas pixel centre at the box corner is half a canvas pixel inside the image
        np.testing.assert_allclose(kp[0, :2], [0.5 / s - 0.5] * 2, atol=1e-4)
        np.testing.assert_allclose(kp[1, :2], [31.5, 63.5], atol=1e-4)  # image centre
        assert kp[0, 2] == pytest.approx(0.8)


# --------------------------------------------------------------------------------------------
# Layouts for real crops: exact coordinate mapping, plausibility, detection on real people

from hypothesis import given
from hypothesis import strategies as st

from keyreid.pose import PREPROCESS, Preprocess, implausible_reason, missing_list_path


@given(w=st.integers(1, 300), h=st.integers(1, 300), long_side=st.sampled_from([0, 64, 256, 333]),
       canvas=st.sampled_from(["tall", "square", "plain"]), margin=st.floats(0, 1),
       factor=st.floats(1, 3), fill=st.sampled_from(["edge", "black"]),
       fx=st.floats(0, 1), fy=st.floats(0, 1))
def test_layout_maps_coordinates_back_exactly(w, h, long_side, canvas, margin, factor, fill, fx, fy):
    pre = Preprocess(canvas=canvas, fill=fill, min_long_side=long_side, margin=margin,
                     height_factor=factor)
    rng = np.random.default_rng(w * 1000 + h)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    out, geom = pre.apply(img)
    assert out.size == (geom.canvas_width, geom.canvas_height)
    # the scaled image sits unchanged at the offset; the padding never covers it
    scaled = img if (geom.scaled_width, geom.scaled_height) == img.size else \
        img.resize((geom.scaled_width, geom.scaled_height), Image.BICUBIC)
    box = (geom.offset_x, geom.offset_y, geom.offset_x + geom.scaled_width,
           geom.offset_y + geom.scaled_height)
    assert np.array_equal(np.asarray(out.crop(box)), np.asarray(scaled))
    if canvas == "tall":
        assert geom.canvas_height == max(geom.scaled_height, round(geom.scaled_height * factor))
    # any point of the original (corners included) goes to the canvas and back exactly
    pts = np.array([[fx * w - 0.5, fy * h - 0.5], [-0.5, -0.5], [w - 0.5, h - 0.5]])
    np.testing.assert_allclose(geom.to_original(geom.to_canvas(pts)), pts, atol=1e-9)
    # the image's edges land on the scaled image's edges on the canvas
    np.testing.assert_allclose(geom.to_canvas([[-0.5, -0.5], [w - 0.5, h - 0.5]]),
                               [box[:2], box[2:]], atol=1e-9)
    assert geom.inside_original(pts).all()


def test_edge_fill_repeats_the_border_and_black_fill_is_black():
    img = Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10)
    geom = plan_canvas(3, 2, min_long_side=0, canvas="plain", margin=1.0)  # 3 px each side
    edge = np.asarray(render_canvas(img, geom, "edge"))
    src = np.asarray(img)
    assert edge.shape == (2 + 6, 3 + 6, 3)
    assert (edge[0, 3:6] == src[0]).all() and (edge[-1, 3:6] == src[-1]).all()  # rows repeated
    assert (edge[3, 0] == src[0, 0]).all() and (edge[-1, -1] == src[-1, -1]).all()  # corners
    black = np.asarray(render_canvas(img, geom, "black"))
    assert black[:3].max() == 0 and (black[3:5, 3:6] == src).all()
    with pytest.raises(ValueError, match="fill"):
        render_canvas(img, geom, "mirror")


def test_preprocess_names_and_errors():
    from keyreid.errors import KeyreidError
    from keyreid.pose import get_preprocess

    assert get_preprocess("tall-edge") == Preprocess() == PREPROCESS["tall-edge"]
    old = PREPROCESS["square-black"]  # the layout of the README's first table
    assert (old.canvas, old.fill, old.min_long_side, old.margin) == ("square", "black", 256, 0.25)
    geom = Preprocess().geometry(64, 128)  # a Market crop: 128x256 on a 256x512 canvas
    assert (geom.scaled_width, geom.scaled_height, geom.canvas_width, geom.canvas_height,
            geom.offset_x, geom.offset_y) == (128, 256, 256, 512, 64, 128)
    with pytest.raises(KeyreidError, match="unknown preprocessing 'wide'"):
        get_preprocess("wide")
    with pytest.raises(KeyreidError, match="height_factor"):
        Preprocess(height_factor=0.5)


def _upright(h=128.0):
    """A front-facing person standing in a 64 x h crop (COCO-17)."""
    kp = np.zeros((17, 3))
    xy = {"nose": (32, 12), "left_eye": (35, 10), "right_eye": (29, 10), "left_ear": (38, 11),
          "right_ear": (26, 11), "left_shoulder": (44, 28), "right_shoulder": (20, 28),
          "left_elbow": (47, 46), "right_elbow": (17, 46), "left_wrist": (48, 62),
          "right_wrist": (16, 62), "left_hip": (40, 66), "right_hip": (24, 66),
          "left_knee": (41, 92), "right_knee": (23, 92), "left_ankle": (42, 118),
          "right_ankle": (22, 118)}
    for name, (x, y) in xy.items():
        kp[COCO17.index(name)] = (x, y * h / 128, 0.9)
    return kp


def test_plausibility_checks():
    kp = _upright()
    assert implausible_reason(kp, 64, 128) is None
    flipped = kp.copy()
    flipped[:, 1] = 127 - flipped[:, 1]  # upside down
    assert implausible_reason(flipped, 64, 128) == "shoulders above head"
    few = kp.copy()
    few[4:, 2] = 0.0
    assert "only 4" not in (implausible_reason(few, 64, 128) or "")  # 4 head points: enough
    few[3, 2] = 0.3  # below the confidence threshold
    assert implausible_reason(few, 64, 128).startswith("only 3 keypoint(s)")
    arm = kp.copy()
    arm[COCO17.index("left_wrist"), :2] = (60, 46 + 3 * 16 + 5)  # forearm > 3x the other
    assert implausible_reason(arm, 64, 128) == "left and right forearm differ more than 3x"
    long = kp.copy()
    long[COCO17.index("left_ankle"), :2] = (42, 400)  # outside anyway, but a 300-px shin
    assert "longer than the crop" in implausible_reason(long, 64, 128)
    head_only = np.zeros((17, 3))
    head_only[:5] = kp[:5]
    assert implausible_reason(head_only, 64, 128) is None  # partial bodies are fine


REAL_PER_PERSON = 8  # 24 crops: a few seconds of mediapipe


@pytest.fixture(scope="module")
def real_crops(tmp_path_factory):
    from real_people import write_real_crops

    root = tmp_path_factory.mktemp("real_crops")
    write_real_crops(root, REAL_PER_PERSON)
    return root


@pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe is not installed")
def test_real_crops_default_layout_finds_people_the_old_one_missed(real_crops, tmp_path):
    """Real people (three photos shipped in scikit-image / matplotlib, cut into 24 re-ID-like
    crops: squashed to 64x128, mirrored, blurred, JPEG 25-90, hand-marked keypoints). Measured
    with mediapipe 0.10.21 on CPU (deterministic): the default (tall canvas, edge borders,
    retry on a 1.5x canvas) finds 24 / 24 (23 plausible), the old square black canvas 19 / 24."""
    from keyreid.pose import build_estimator

    ds = build_dataset("folder", real_crops)
    found, plausible, pck_all = {}, {}, {}
    for label, kw in {"default": {}, "old": dict(preprocess="square-black", retry=None)}.items():
        out = tmp_path / f"{label}.jsonl"
        with build_estimator("mediapipe", **kw) as est:
            s = estimate_dataset(ds, out, est, progress=False)
        found[label], plausible[label] = s.found, s.found - s.implausible
        pck_all[label] = pck(out, real_crops / "reference.jsonl")
        assert missing_list_path(out).read_text().split() == s.missing
    n = 3 * REAL_PER_PERSON
    assert found["default"] >= 0.9 * n  # measured 24 / 24 (issue 8's target: >= 90%)
    assert found["old"] <= found["default"] - 3  # measured 19
    assert plausible["default"] >= n - 3  # measured 23
    # more of the 131 hand-marked keypoints within 0.1 x the head-and-shoulders box: measured
    # 58.0% against 47.3% for the old layout
    assert pck_all["default"].overall >= 0.5
    assert pck_all["default"].overall > pck_all["old"].overall


@pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe is not installed")
def test_default_layout_keeps_synthetic_pck(synth, tmp_path):
    """The cartoon people of the synthetic set: the default finds at least as many and scores at
    least the old layout's PCK (bench/keypoints_real.py has the 400-image table)."""
    from keyreid.pose import build_estimator

    ds, _, _ = synth
    res = {}
    for label, kw in {"default": {}, "old": dict(preprocess="square-black", retry=None)}.items():
        out = tmp_path / f"{label}.jsonl"
        with build_estimator("mediapipe", **kw) as est:
            s = estimate_dataset(ds, out, est, limit=24, progress=False)
        res[label] = (s.found, pck(out, Path(ds.root) / "keypoints.jsonl").overall)
    assert res["default"][0] >= res["old"][0] and res["default"][1] >= res["old"][1]


def test_cli_estimate_reports_rate_lists_missing_and_show_draws_them(synth, tmp_path):
    """Through the real command line: detection rate on screen, the images with nobody found
    in a file beside the sidecar (resumed runs included) and the first ones on screen;
    `show --missing` draws exactly those."""
    import keyreid.commands.keypoints as kp_cmd
    from keyreid.cli import app

    ds, true, truth = synth
    if "test-oracle" not in ESTIMATORS:
        register_estimator("test-oracle")(lambda batch_size=16: OracleEstimator(truth))
    keys = [k for k, _ in dataset_images(ds)]
    empty = [k for k in keys if not (true[k][:, 2] > 0).any()]  # clutter: nobody to find
    assert len(empty) >= 2
    out = tmp_path / "kp.jsonl"
    args = ["keypoints", "estimate", str(ds.root), "-d", "market1501", "--option",
            "num_cameras=3", "-o", str(out), "-e", "test-oracle", "--no-progress"]
    cut = keys.index(empty[1])  # the first run stops after the first two images with nobody
    res = CliRunner().invoke(app, args + ["--limit", str(cut + 1)])
    assert res.exit_code == 0, res.output
    missing_file = tmp_path / "kp.missing.txt"
    assert missing_file.read_text().split() == empty[:2]
    res = CliRunner().invoke(app, args)  # resumes; the list covers both runs
    assert res.exit_code == 0, res.output
    text = res.output
    found = len(keys) - len(empty)
    assert f"person found in {found} / {len(keys)} images ({100 * found / len(keys):.1f}%)" in text
    assert f"nobody found in {len(empty)} image(s)" in text and str(missing_file) in text
    assert missing_file.read_text().split() == empty
    after = text[text.index("nobody found in"):]     # (implausible skeletons are listed before it)
    listed = [line.strip()[2:] for line in after.splitlines() if line.strip().startswith("- ")]
    assert listed == empty[:kp_cmd.SHOW_MISSING]
    if len(empty) > kp_cmd.SHOW_MISSING:
        assert f"and {len(empty) - kp_cmd.SHOW_MISSING} more" in text

    sidecar_bytes = out.read_bytes()
    png = tmp_path / "missing.png"
    res = CliRunner().invoke(app, ["keypoints", "show", str(ds.root), str(out), "--missing",
                                   "--n", "50", "-o", str(png), "--columns", "4",
                                   "--scale", "1"])
    assert res.exit_code == 0, res.output
    assert f"({len(empty)} of {len(empty)} image(s) with nobody found)" in res.output
    with Image.open(png) as im:  # one 64x128 tile (+ caption) per image with nobody found
        rows = -(-len(empty) // 4)
        assert im.size == (min(4, len(empty)) * (64 + 4) + 4, rows * (128 + 14 + 4) + 4)
    assert out.read_bytes() == sidecar_bytes  # drawing never touches the sidecar
    # a sidecar where everybody was found: good news, exit 0, said in one line, nothing written
    full = tmp_path / "full.jsonl"
    write_sidecar(full, "coco17", {k: true[k] for k in keys if k not in empty})
    res = CliRunner().invoke(app, ["keypoints", "show", str(ds.root), str(full), "--missing",
                                   "-o", str(tmp_path / "none.png")])
    assert res.exit_code == 0 and "somebody was found in every one" in " ".join(res.output.split())
    assert not (tmp_path / "none.png").exists()
    res = CliRunner().invoke(app, args + ["--preprocess", "tall-edge"])
    assert res.exit_code == 2 and "--preprocess is for --estimator mediapipe" in res.output

    if HAVE_MEDIAPIPE:  # --margin has no meaning on the default tall canvas: refused, not ignored
        before = out.read_bytes()
        res = CliRunner().invoke(app, [*args[:-3], "--margin", "0.3"])
        assert res.exit_code == 2, res.output
        assert "error: --margin applies to square and crop layouts, not to 'tall-edge'" in res.output
        assert out.read_bytes() == before


def test_cli_estimate_prints_plain_progress_lines_without_a_terminal(synth, tmp_path, monkeypatch):
    from keyreid.cli import app

    monkeypatch.delenv("KEYREID_PROGRESS", raising=False)
    ds, _, truth = synth
    if "test-oracle" not in ESTIMATORS:
        register_estimator("test-oracle")(lambda batch_size=16: OracleEstimator(truth))
    n = len(dataset_images(ds))
    res = CliRunner().invoke(app, ["keypoints", "estimate", str(ds.root), "-d", "market1501",
                                   "--option", "num_cameras=3", "-o", str(tmp_path / "kp.jsonl"),
                                   "-e", "test-oracle", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("keypoints (oracle): ")]
    # one line per 4-image batch that crosses a 5% mark (and the last one)
    step = 0.05 * n
    ends = [min(d, n) for d in range(4, n + 4, 4)]
    assert len(lines) == sum(int(e / step + 1e-9) > int((e - 4) / step + 1e-9) for e in ends), \
        res.output
    assert lines[-1].startswith(f"keypoints (oracle): {n}/{n} (100%), ")
    assert "ETA" in lines[0] and "nobody found in" in lines[-1]


def test_estimate_names_the_implausible_skeletons_with_their_reason(synth, tmp_path):
    """One skeleton upside down (shoulders above the head): the CLI names its image and the
    failed check, lists it in kp.implausible.txt, and a resumed run keeps the name."""
    from keyreid.commands.keypoints import app
    from keyreid.pose import implausible_reason

    ds, true, truth = synth
    keys = [k for k, _ in dataset_images(ds)]
    victim = next(k for k in keys if (true[k][:, 2] > 0).sum() >= 10)
    flipped = true[victim].copy()
    flipped[:, 1] = 127 - flipped[:, 1]
    assert implausible_reason(flipped, 64, 128)
    victim_bytes = next(b for b, kp in truth.items() if kp is true[victim])
    upside = {**truth, victim_bytes: flipped}
    if "test-upside" not in ESTIMATORS:
        register_estimator("test-upside")(lambda batch_size=16: OracleEstimator(upside))
    out = tmp_path / "kp.jsonl"
    args = ["estimate", str(ds.root), "-d", "market1501", "--option", "num_cameras=3", "-o", str(out),
            "-e", "test-upside", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    listed = (tmp_path / "kp.implausible.txt").read_text().splitlines()
    # the oracle's keypoints: the truth at 0.9 confidence (a few synthetic poses fail checks too)
    _, got = read_sidecar(out)
    expected = [k for k in keys if (got[k][:, 2] > 0).any() and implausible_reason(got[k], 64, 128)]
    assert victim in expected and [line.split("\t")[0] for line in listed] == expected
    reason = dict(line.split("\t") for line in listed)[victim]
    assert reason == implausible_reason(got[victim], 64, 128) and "implausible skeleton" in text
    from keyreid.commands import keypoints as kp_cmd

    shown = [f"{k}: {dict(line.split(chr(9)) for line in listed)[k]}" for k in expected[:kp_cmd.SHOW_MISSING]]
    assert all(line in text for line in shown)
    res = CliRunner().invoke(app, args)          # resumed: nothing estimated now, the name stays
    assert res.exit_code == 0 and (tmp_path / "kp.implausible.txt").read_text().splitlines() == listed
