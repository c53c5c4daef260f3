"""The synthetic people generator: layout, determinism, keypoints, and that it tests learning."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from keyreid.commands.synth import synth
from keyreid.data.datasets import build_dataset
from keyreid.data.keypoints import COCO17, read_sidecar
from keyreid.data.synthetic import (PALETTE, PARTS, SynthConfig, attribute_vector, generate,
                                    load_synth, plan_dataset, true_attributes)
from keyreid.errors import DataError
from keyreid.evaluation.reid import evaluate

NAME = re.compile(r"^(-1|\d{4})_c(\d)s1_(\d{6})_(\d{2})\.jpg$")
TINY = dict(train_identities=5, test_identities=5, cameras=3, distractors=6, junk=3, seed=7)


def _hash_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_tiny")
    generate(root, SynthConfig(**TINY), workers=1)
    return root


@pytest.fixture(scope="session")
def default_set(tmp_path_factory):
    """The default-size set (300 + 300 identities, 6 cameras), generated once per session."""
    root = tmp_path_factory.mktemp("synth_default")
    generate(root, SynthConfig(), workers=2)
    return root


def _rel(root: Path, path: str) -> str:
    return Path(path).resolve().relative_to(root.resolve()).as_posix()


# ------------------------------------------------------------------------------------- config


def test_config_validation_and_round_trip():
    cfg = SynthConfig()
    assert (cfg.train_identities, cfg.test_identities, cfg.cameras, cfg.height, cfg.width) == (300, 300, 6, 128, 64)
    with pytest.raises(ValueError):
        SynthConfig(cameras=1)
    with pytest.raises(ValueError):
        SynthConfig(cameras=10)  # Market names hold one camera digit
    with pytest.raises(ValueError):
        SynthConfig(test_images_per_camera=(1, 3))  # a query needs a gallery partner
    with pytest.raises(ValueError):
        SynthConfig(texture_probs=(0.5, 0.5, 0.5, 0.5))
    again = SynthConfig.from_dict(json.loads(json.dumps(SynthConfig(seed=3).__dict__)))
    assert again == SynthConfig(seed=3)  # lists from JSON come back as tuples


def test_identities_share_palette_with_balanced_colours():
    plan = plan_dataset(SynthConfig(train_identities=400, test_identities=400, distractors=0, junk=0))
    counts = np.zeros((len(PARTS), len(PALETTE)))
    for attrs in plan.identities.values():
        colours = [attrs["parts"][p]["colour"] for p in PARTS]
        assert len(set(colours)) == len(PARTS)  # every person: distinct palette colour per part
        for i, c in enumerate(colours):
            counts[i, c] += 1
    # every colour on every part about equally often (800 people / 8 colours = 100 each)
    assert counts.min() > 60 and counts.max() < 140
    sigs = {json.dumps(a, sort_keys=True) for a in plan.identities.values()}
    assert len(sigs) == len(plan.identities)  # no two identities look alike


# ------------------------------------------------------------------------------ tiny set


def test_same_seed_gives_byte_identical_output_for_any_worker_count(tmp_path, tiny_set):
    generate(tmp_path / "two", SynthConfig(**TINY), workers=2)
    first, second = _hash_tree(tiny_set), _hash_tree(tmp_path / "two")
    assert first == second
    assert len(first) > 50
    generate(tmp_path / "other", SynthConfig(**{**TINY, "seed": 8}), workers=1)
    other = _hash_tree(tmp_path / "other")
    differing = [k for k in set(first) & set(other) if first[k] != other[k]]
    assert set(first) != set(other) or differing


def test_layout_names_and_splits(tiny_set):
    root = tiny_set
    meta = load_synth(root)
    files = {d: sorted(p.name for p in (root / d).iterdir())
             for d in ("bounding_box_train", "query", "bounding_box_test")}
    pids = {}
    for d, names in files.items():
        assert names, d
        for n in names:
            m = NAME.match(n)
            assert m, n
            assert 1 <= int(m.group(2)) <= TINY["cameras"]
        pids[d] = {int(NAME.match(n).group(1)) for n in names}
    assert pids["bounding_box_train"] == set(meta["splits"]["train"])
    assert pids["query"] == set(meta["splits"]["test"])
    assert pids["bounding_box_test"] == set(meta["splits"]["test"]) | {0, -1}
    assert not set(meta["splits"]["train"]) & set(meta["splits"]["test"])
    gallery = files["bounding_box_test"]
    assert sum(n.startswith("0000_") for n in gallery) == TINY["distractors"]
    assert sum(n.startswith("-1_") for n in gallery) == TINY["junk"]
    # one query per test identity per camera it appears in; every query has a positive
    # in the gallery from another camera
    cams = lambda names, pid: [int(NAME.match(n).group(2)) for n in names  # noqa: E731
                               if int(NAME.match(n).group(1)) == pid]
    for pid in meta["splits"]["test"]:
        q, g = cams(files["query"], pid), cams(gallery, pid)
        assert sorted(set(q)) == sorted(q) == sorted(set(g))
        assert len(set(g)) >= 2
    # sidecar covers exactly the images, with paths relative to the root
    skel, entries = read_sidecar(root / "keypoints.jsonl")
    assert skel == "coco17"
    all_rel = {f"{d}/{n}" for d, names in files.items() for n in names}
    assert set(entries) == all_rel
    assert set(meta["images"]) == all_rel
    assert len(meta["identities"]) == TINY["train_identities"] + TINY["test_identities"]
    for n in files["query"][:3]:
        im = Image.open(root / "query" / n)
        assert im.size == (64, 128) and im.mode == "RGB"


def test_market_adapter_reads_the_tree_with_keypoints(tiny_set):
    ds = build_dataset("market1501", tiny_set, num_cameras=TINY["cameras"],
                       keypoints=tiny_set / "keypoints.jsonl")
    s = ds.summary()
    assert s["train"]["ids"] == TINY["train_identities"]
    assert s["query"]["ids"] == TINY["test_identities"]
    assert s["gallery"]["ids"] == TINY["test_identities"] + 1  # + distractors (pid 0)
    assert all(x.pid != -1 for x in ds.gallery)  # junk dropped by the reader
    assert all(x.keypoints is not None and x.keypoints.shape == (17, 3) for x in ds.train)


def test_keypoint_visibility_rules(default_set):
    root = default_set
    meta = load_synth(root)
    _, entries = read_sidecar(root / "keypoints.jsonl")
    W, H = meta["config"]["width"], meta["config"]["height"]
    n_occluded = n_outside = 0
    for rel, kp in entries.items():
        info = meta["images"][rel]
        vis = kp[:, 2] > 0
        inside = (kp[:, 0] >= -0.5) & (kp[:, 0] <= W - 0.5) & (kp[:, 1] >= -0.5) & (kp[:, 1] <= H - 0.5)
        assert not (vis & ~inside).any(), rel  # visible => inside the image
        n_outside += int((~inside).sum())
        if info["kind"] == "clutter":
            assert not vis.any()
        if info.get("occluder"):
            x0, y0, x1, y1 = info["occluder"]
            under = (kp[:, 0] >= x0) & (kp[:, 0] <= x1) & (kp[:, 1] >= y0) & (kp[:, 1] <= y1)
            assert not (vis & under).any(), rel
            n_occluded += int(under.sum())
    assert n_occluded > 100 and n_outside > 100


def test_keypoint_labels_stay_anatomical_when_the_view_mirrors(default_set):
    """Facing the camera the person's left shoulder is on the image right; from behind, left."""
    meta = load_synth(default_set)
    _, entries = read_sidecar(default_set / "keypoints.jsonl")
    ls, rs = COCO17.index("left_shoulder"), COCO17.index("right_shoulder")
    front, back = [], []
    for rel, info in meta["images"].items():
        if info["kind"] != "person":
            continue
        dx = entries[rel][ls, 0] - entries[rel][rs, 0]
        if min(info["yaw"], 360 - info["yaw"]) < 30:
            front.append(dx)
        elif abs(info["yaw"] - 180) < 30:
            back.append(dx)
    assert len(front) > 100 and len(back) > 100
    assert np.mean(np.array(front) > 0) > 0.95 and np.mean(np.array(back) < 0) > 0.95


def test_cli_command(tmp_path):
    app = typer.Typer()
    app.command()(synth)
    app.command("noop")(lambda: None)  # two commands, so `synth` is invoked by name
    out = tmp_path / "cli"
    args = ["synth", str(out), "--identities", "3", "--cameras", "2", "--distractors", "2", "--junk", "1",
            "--seed", "1", "--workers", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    meta = load_synth(out)
    assert meta["config"]["train_identities"] == 3 and meta["config"]["test_identities"] == 3
    assert (out / "keypoints.jsonl").is_file() and any((out / "query").iterdir())
    res = CliRunner().invoke(app, args)  # refuses to overwrite silently (cli.main makes it exit 2)
    assert isinstance(res.exception, DataError) and "pass --overwrite" in str(res.exception)
    res = CliRunner().invoke(app, args + ["--overwrite"])
    assert res.exit_code == 0, res.output


# ---------------------------------------------------------------- default set: a real test


def _features(samples, root, meta, entries):
    ims = np.stack([np.asarray(Image.open(s.path).convert("RGB"), dtype=np.float32) for s in samples])
    # trivial 1: down-sampled raw pixels (16x8 RGB)
    small = np.stack([np.asarray(Image.fromarray(x.astype(np.uint8)).resize((8, 16), Image.BOX),
                                 dtype=np.float32).ravel() for x in ims])
    # trivial 2: joint RGB colour histogram, 8 bins per channel, L1-normalised (Hellinger via sqrt)
    q = (ims // 32).astype(np.int64)
    idx = (q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).reshape(len(ims), -1)
    hist = np.stack([np.bincount(i, minlength=512) for i in idx]).astype(np.float64)
    hist = np.sqrt(hist / hist.sum(1, keepdims=True))
    # oracle: one-hot true part attributes from synth.json
    oracle = np.stack([attribute_vector(true_attributes(meta, _rel(root, s.path))) for s in samples])
    # keypoint-aligned colour: mean chromaticity at limb midpoints (ground-truth keypoints)
    parts = [("left_shoulder", "right_hip"), ("right_shoulder", "left_hip"),
             ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
             ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
             ("left_hip", "left_knee"), ("right_hip", "right_knee"),
             ("left_knee", "left_ankle"), ("right_knee", "right_ankle")]
    kpf = np.zeros((len(ims), len(parts), 3))
    kpm = np.zeros((len(ims), len(parts)))
    for n, (x, s) in enumerate(zip(ims, samples)):
        kp = entries[_rel(root, s.path)]
        for j, (a, b) in enumerate(parts):
            A, B = kp[COCO17.index(a)], kp[COCO17.index(b)]
            if A[2] > 0 and B[2] > 0:
                cx, cy = int(round((A[0] + B[0]) / 2)), int(round((A[1] + B[1]) / 2))
                c = x[max(0, cy - 2):cy + 3, max(0, cx - 2):cx + 3].reshape(-1, 3).mean(0)
                kpf[n, j], kpm[n, j] = c / (c.sum() + 1e-3), 1
    return small, hist, oracle, (kpf, kpm)


def _euclid(a, b):
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(d, 0))


def test_default_set_needs_learning_trivial_low_oracle_high(default_set):
    root = default_set
    meta = load_synth(root)
    ds = build_dataset("market1501", root, num_cameras=meta["config"]["cameras"])
    s = ds.summary()
    assert s["train"]["ids"] == 300 and s["query"]["ids"] == 300 and s["gallery"]["ids"] == 301
    assert 7 <= s["train"]["images"] / 300 <= 9  # roughly 8 training images per identity
    _, entries = read_sidecar(root / "keypoints.jsonl")
    q, g = ds.query, ds.gallery
    qp, gp = np.array([x.pid for x in q]), np.array([x.pid for x in g])
    qc, gc = np.array([x.camid for x in q]), np.array([x.camid for x in g])
    fq, fg = _features(q, root, meta, entries), _features(g, root, meta, entries)

    def mAP(d):
        return evaluate(d, qp, gp, qc, gc).mAP

    pixel, hist, oracle = mAP(_euclid(fq[0], fg[0])), mAP(_euclid(fq[1], fg[1])), mAP(_euclid(fq[2], fg[2]))
    (kq, mq), (kg, mg) = fq[3], fg[3]
    d = np.zeros((len(q), len(g)))
    for j in range(kq.shape[1]):  # compare each limb only with the same limb, where both are visible
        d += _euclid(kq[:, j], kg[:, j]) * (mq[:, j:j + 1] * mg[None, :, j])
    both = mq @ mg.T
    aligned = mAP(d / np.maximum(both, 1) + 10.0 * (both == 0))
    print(f"\nsynthetic default: pixel mAP {pixel:.4f}, histogram mAP {hist:.4f}, "
          f"keypoint-aligned colour mAP {aligned:.4f}, oracle mAP {oracle:.4f}")
    assert pixel < 0.30 and hist < 0.30
    assert oracle > 0.95
    # comparing the same body part with the same body part is what the benchmark rewards
    assert aligned > 0.25 and aligned > 3 * max(pixel, hist)
