"""The synthetic renderer as a package: its output is frozen byte for byte, and SynthScenes
re-renders any person of a set (with a mask) or puts one person into another image's pose."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from keyreid.data.keypoints import read_sidecar
from keyreid.data.synthetic import (PALETTE, SynthConfig, SynthScenes, generate, load_synth, paint, plan_dataset,
                                    render_array, render_image, sample_scene)
from keyreid.data.synthetic.render import coverage_mask, encode_jpeg
from keyreid.errors import DataError

SMALL = dict(train_identities=12, test_identities=12, distractors=20, junk=4, seed=3)

# Recorded with the single-file renderer (src/keyreid/data/synthetic.py at commit 865fed6), before
# it became a package; the package reproduced them unchanged.
SMALL_TREE_DIGEST = "48b2130c9a936630e1142cf958aae9cb158c74045073749bc8f23ed597e42ac4"
SMALL_IMAGES_DIGEST = "e9879a954e11e86b4d229d446286ccaed9d6dc2a469ae43a95815a37b37dd68e"
SMALL_FILES = {
    "keypoints.jsonl": "63c4e7c41ec9324f8621d13df87e3637913fa8685949d7d2eb57191104260cde",
    "synth.json": "2e0fc3e0235618e79e6f3d2a794a86dc6294e8ac05e2783e445f4797b77bd961",
    ".keyreid-synth": "1b19ac55d7fbf9084dbd554b0f6b60209cb9f9e68f9053b87c0b61ad403e4847",
}
SMALL_FILE_COUNT = 224
# default config: the first 50 planned images plus the first query, gallery, clutter, junk and
# distractor person (indices found in the plan, fixed here)
DEFAULT_INDICES = list(range(50)) + [2373, 2374, 5448, 5948, 5573]
DEFAULT_ITEMS_DIGEST = "555428a50e60fc92edd7aba9d0516fa0f31bad21dccfa690be04c03fb05bc3de"
DEFAULT_ARRAYS_DIGEST = "137e80e61f82db72a6b02b6c068f2d10fc292845887bea67a409e9a36c2a4962"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _digest(lines) -> str:
    return _sha("\n".join(lines).encode())


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_small")
    generate(root, SynthConfig(**SMALL), workers=1)
    return root


@pytest.fixture(scope="module")
def scenes(small_set):
    return SynthScenes(small_set)


def test_generated_set_is_byte_identical_to_the_recorded_one(small_set):
    """Guards the renderer against accidental changes: every file of a small generated set
    (images, keypoints.jsonl, synth.json, marker) hashes to constants recorded before the
    renderer was split into a package. If you change the renderer's output ON PURPOSE, record
    the new constants and say so in the commit; if this fails and you did not mean to change the
    images, a refactor changed the order or the values of the random draws. (JPEG bytes also
    depend on the pinned Pillow / libjpeg; see the array digest test to tell the two apart.)"""
    files = {p.relative_to(small_set).as_posix(): _sha(p.read_bytes())
             for p in sorted(small_set.rglob("*")) if p.is_file()}
    assert len(files) == SMALL_FILE_COUNT
    for name, digest in SMALL_FILES.items():
        assert files[name] == digest, name
    assert _digest(f"{k} {v}" for k, v in sorted(files.items()) if k.endswith(".jpg")) == SMALL_IMAGES_DIGEST
    assert _digest(f"{k} {v}" for k, v in sorted(files.items())) == SMALL_TREE_DIGEST


def test_default_config_images_are_byte_identical_to_the_recorded_ones():
    """The default config (the demo's set), images rendered one by one from the plan: JPEG bytes,
    keypoints and metadata hash to constants recorded before the package split; the pre-JPEG
    arrays to a constant recorded from the package (arrays equal but JPEG not = the encoder
    changed, not the renderer)."""
    cfg = SynthConfig()
    plan = plan_dataset(cfg)
    cams = {c["camera"]: c for c in plan.cameras}
    lines, arrays = [], hashlib.sha256()
    for i in DEFAULT_INDICES:
        item = plan.items[i]
        data, kp, meta = render_image(item, cams[item["camera"]], cfg)
        lines.append(" ".join([str(i), _sha(data), _sha(np.asarray(kp, "<f8").tobytes()),
                               _sha(json.dumps(meta, sort_keys=True).encode())]))
        arrays.update(render_array(item, cams[item["camera"]], cfg)[0].tobytes())
    assert {plan.items[i]["kind"] for i in DEFAULT_INDICES} == {"person", "clutter", "junk"}
    assert arrays.hexdigest() == DEFAULT_ARRAYS_DIGEST
    assert _digest(lines) == DEFAULT_ITEMS_DIGEST


# --------------------------------------------------------------------------------------------
# SynthScenes: render


def _camera(meta: dict, rel: str) -> dict:
    return meta["cameras"][int(rel.split("_c")[1][0]) - 1]


def test_render_is_the_dataset_image_before_jpeg(small_set, scenes):
    """render(p).image is exactly the pre-JPEG array: JPEG-encoding it gives the file's bytes.
    Against the decoded file the luminance differs by < 3 grey levels on average (measured
    1.8; RGB differs more, ~7.6, because JPEG halves the chroma resolution of these saturated
    cartoon colours); keypoints are the sidecar's."""
    _, sidecar = read_sidecar(small_set / "keypoints.jsonl")
    plan = plan_dataset(scenes.config)
    cams = {c["camera"]: c for c in plan.cameras}
    by_path = {it["path"]: it for it in plan.items}
    paths = scenes.paths("train")[:12] + scenes.paths("query")[:6] + scenes.paths("gallery")[:6]
    for p in paths:
        r = scenes.render(p)
        assert r.image.dtype == np.uint8 and r.image.shape == (128, 64, 3)
        assert r.keypoints.dtype == np.float32 and r.mask.dtype == bool and r.mask.shape == (128, 64)
        fresh = render_array(by_path[p], cams[by_path[p]["camera"]], scenes.config)[0]
        np.testing.assert_array_equal(r.image, fresh)
        assert encode_jpeg(r.image, scenes.config.jpeg_quality) == (small_set / p).read_bytes()
        disk = Image.open(small_set / p)
        grey = np.asarray(Image.fromarray(r.image).convert("L"), float)
        assert np.abs(grey - np.asarray(disk.convert("L"), float)).mean() < 3.0
        np.testing.assert_array_equal(r.keypoints, sidecar[p])
        assert 300 < r.mask.sum() < 0.6 * r.mask.size  # a person, not the whole frame


def test_mask_is_exactly_the_painted_person_accessories_included():
    """Paint each person on an all-black and an all-white background with a neutral camera:
    pixels the person covers are equal in both, background pixels differ by 255 per uncovered
    sub-pixel. The mask must be True exactly where more than half of the 2x2 sub-pixels are
    the person's (hats, bags, straps and wrist bands included: they are painted like the body)."""
    cfg = SynthConfig(train_identities=30, test_identities=2, distractors=0, junk=0, seed=5)
    plan = plan_dataset(cfg)
    cams = {c["camera"]: c for c in plan.cameras}
    items = [plan.items[i] for i in range(0, len(plan.items), 9)][:24]
    accessories = {k for it in items for k, v in it["attributes"]["accessories"].items() if v is not None}
    assert accessories == {"hat", "bag", "band"}
    ss = cfg.supersample
    size = (cfg.width * ss, cfg.height * ss)
    for it in items:
        scene = dataclasses.replace(sample_scene(it, cams[it["camera"]], cfg), occluder=None, blur=0.0, gain=1.0,
                                    cast=(1.0, 1.0, 1.0), noise=np.zeros((cfg.height, cfg.width, 3), np.float32))
        on_black, _, _, mask = paint(it["attributes"], dataclasses.replace(scene, background=Image.new("RGB", size)),
                                     cfg, with_mask=True)
        on_white = paint(it["attributes"], dataclasses.replace(scene, background=Image.new("RGB", size, (255,) * 3)),
                         cfg)[0]
        uncovered = (on_white.astype(float) - on_black.astype(float)).max(-1) / 255.0  # fraction, 0..1
        covered_subpixels = np.round(ss * ss * (1.0 - uncovered))
        np.testing.assert_array_equal(mask, covered_subpixels > ss * ss / 2)


def test_coverage_mask_keeps_blocks_more_than_half_covered():
    cov = np.zeros((4, 6), np.uint8)
    cov[0:2, 0:2] = 255  # 4/4
    cov[0, 2:4] = 255
    cov[1, 2] = 255  # 3/4
    cov[2, 0:2] = 255  # 2/4
    cov[3, 3] = 255  # 1/4
    expected = np.array([[True, True, False], [False, False, False]])
    np.testing.assert_array_equal(coverage_mask(Image.fromarray(cov), 2), expected)


def test_render_mask_leaves_out_the_occluder(small_set, scenes):
    meta = load_synth(small_set)
    occluded = [p for p in scenes.paths("train") + scenes.paths("gallery") if meta["images"][p]["occluder"]]
    assert len(occluded) >= 5
    for p in occluded[:5]:
        x0, y0, x1, y1 = meta["images"][p]["occluder"]
        r = scenes.render(p)
        ys, xs = np.mgrid[0:128, 0:64]
        inside = (xs - 0.5 >= x0) & (xs + 0.5 <= x1) & (ys - 0.5 >= y0) & (ys + 0.5 <= y1)
        assert inside.any() and not r.mask[inside].any()


def test_scenes_refuse_unknown_paths_splits_and_foreign_sets(tmp_path, small_set, scenes):
    with pytest.raises(DataError, match="not an image of this synthetic set"):
        scenes.render("query/9999_c1s1_000001_00.jpg")
    with pytest.raises(DataError, match="unknown split"):
        scenes.paths("test")
    clutter = next(p for p, v in load_synth(small_set)["images"].items() if v["kind"] == "clutter")
    assert not scenes.render(clutter).mask.any()
    with pytest.raises(DataError, match="clutter"):
        scenes.transfer(clutter, scenes.paths("query")[0])
    with pytest.raises(DataError, match="synth.json"):
        SynthScenes(tmp_path)
    meta = json.loads((small_set / "synth.json").read_text())
    meta["config"]["seed"] = 4  # a description that does not re-plan into this set
    (tmp_path / "synth.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="re-plans into other images"):
        SynthScenes(tmp_path)
    assert scenes.pid(scenes.paths("query")[0]) == int(scenes.paths("query")[0].split("/")[1][:4])
    assert {scenes.pid(p) for p in scenes.paths("train")} == set(range(1, 13))
    assert {scenes.pid(p) for p in scenes.paths("query")} == set(range(13, 25))


# --------------------------------------------------------------------------------------------
# SynthScenes: transfer


def _pairs(scenes, n):
    train, query = scenes.paths("train"), scenes.paths("query")
    return [(train[(7 * i) % len(train)], query[(5 * i) % len(query)]) for i in range(n)]


def test_transfer_has_the_target_keypoints_and_no_occluder(small_set, scenes):
    """Coordinates are the target's; visibility too, except a joint the target's occluder hid,
    which is visible in the transfer (it has no occluder)."""
    meta = load_synth(small_set)
    _, sidecar = read_sidecar(small_set / "keypoints.jsonl")
    pairs = _pairs(scenes, 20)
    occluded = [p for p in scenes.paths("gallery") if meta["images"][p]["occluder"]]
    pairs += [(scenes.paths("train")[i], t) for i, t in enumerate(occluded[:6])]
    uncovered = 0
    for s, t in pairs:
        r, want = scenes.transfer(s, t), sidecar[t]
        np.testing.assert_array_equal(r.keypoints[:, :2], want[:, :2])
        differ = r.keypoints[:, 2] != want[:, 2]
        if differ.any():
            x0, y0, x1, y1 = meta["images"][t]["occluder"]
            x, y = want[differ, 0], want[differ, 1]
            assert (want[differ, 2] == 0).all() and (r.keypoints[differ, 2] == 1).all()
            assert ((x0 <= x) & (x <= x1) & (y0 <= y) & (y <= y1)).all()
            uncovered += int(differ.sum())
    assert uncovered > 0  # the occluded case was exercised


def test_transfer_keeps_the_source_background_and_camera(small_set, scenes):
    """Outside both people (masks grown by 5 px: the sub-half-covered fringe plus the reach of
    the camera blur, radius <= 1) the transfer is the source image, noise included, pixel for
    pixel. Sources without occluder (the transfer has none)."""
    meta = load_synth(small_set)
    sources = [p for p in scenes.paths("train") if meta["images"][p]["occluder"] is None]
    targets = scenes.paths("query")
    for i in range(12):
        s, t = sources[(5 * i) % len(sources)], targets[(7 * i) % len(targets)]
        r, src, tgt = scenes.transfer(s, t), scenes.render(s), scenes.render(t)
        outside = ~binary_dilation(r.mask | src.mask, iterations=5)
        assert outside.mean() > 0.25
        np.testing.assert_array_equal(r.image[outside], src.image[outside])
        far_from_target = outside & ~binary_dilation(tgt.mask, iterations=5)
        assert (r.image[far_from_target] != tgt.image[far_from_target]).any()  # not the target's background


def test_transfer_onto_itself_is_the_image(small_set, scenes):
    meta = load_synth(small_set)
    paths = scenes.paths("train")[:30] + scenes.paths("gallery")[:30]
    clear = [p for p in paths if meta["images"][p]["occluder"] is None][:8]
    for p in clear:
        a, b = scenes.transfer(p, p), scenes.render(p)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.mask, b.mask)
    occluded = next(p for p in paths if meta["images"][p]["occluder"])
    a, b = scenes.transfer(occluded, occluded), scenes.render(occluded)
    assert (a.image != b.image).any() and (a.mask >= b.mask).all() and a.mask.sum() > b.mask.sum()


def test_transfer_dresses_the_target_pose_in_the_source_clothes(small_set, scenes):
    """On the torso of the transferred person (between the target's shoulders and hips), the
    nearest palette colour after undoing the source camera's gain and cast is the SOURCE's torso
    colour (or its texture colour), not the target's: measured 81% vs 26% on these pairs."""
    meta = load_synth(small_set)
    palette = np.array([c for _, c in PALETTE], float)

    def torso_colour_votes(r, cam):
        kp = r.keypoints
        top, bottom = (kp[5, :2] + kp[6, :2]) / 2, (kp[11, :2] + kp[12, :2]) / 2
        votes = []
        for f in (0.3, 0.45, 0.6):
            x, y = np.round(top + f * (bottom - top)).astype(int)
            if 0 <= x < 64 and 0 <= y < 128 and r.mask[y, x]:
                rgb = r.image[y, x] / (cam["gain"] * np.asarray(cam["cast"]))
                votes.append(int(np.argmin(((palette - rgb) ** 2).sum(1))))
        return votes

    def torso(rel):
        t = meta["identities"][rel.split("/")[1][:4]]["parts"]["torso"]
        return {t["colour"], t["colour2"]}

    src_hits = tgt_hits = own_hits = n = 0
    for s, t in _pairs(scenes, 40):
        for v in torso_colour_votes(scenes.transfer(s, t), _camera(meta, s)):
            n += 1
            src_hits += v in torso(s)
            tgt_hits += v in torso(t)
        own_hits += sum(v in torso(t) for v in torso_colour_votes(scenes.render(t), _camera(meta, t)))
    assert n >= 60
    assert src_hits / n > 0.7 and tgt_hits / n < 0.4
    assert own_hits / n > 0.6  # the measurement itself finds a person's own torso colour
