"""The synthetic renderer as a package: its output is frozen byte for byte, and SynthScenes
re-renders any person of a set (with a mask) or puts one person into another image's pose."""

import hashlib
import json

import numpy as np
import pytest

from keyreid.data.synthetic import SynthConfig, generate, plan_dataset, render_array, render_image

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


def test_generated_set_is_byte_identical_to_the_recorded_one(tmp_path):
    """Guards the renderer against accidental changes: every file of a small generated set
    (images, keypoints.jsonl, synth.json, marker) hashes to constants recorded before the
    renderer was split into a package. If you change the renderer's output ON PURPOSE, record
    the new constants and say so in the commit; if this fails and you did not mean to change the
    images, a refactor changed the order or the values of the random draws. (JPEG bytes also
    depend on the pinned Pillow / libjpeg; see the array digest test to tell the two apart.)"""
    generate(tmp_path, SynthConfig(**SMALL), workers=1)
    files = {p.relative_to(tmp_path).as_posix(): _sha(p.read_bytes())
             for p in sorted(tmp_path.rglob("*")) if p.is_file()}
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
