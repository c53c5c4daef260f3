"""Synthetic multi-camera video: the MOTChallenge layout, global ids across overlapping and distant
cameras, visibility and keypoints from occlusion, noisy detections, determinism, the CLI."""

import configparser
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from keyreid.cli import app
from keyreid.data.keypoints import COCO17
from keyreid.data.synthetic import (SynthConfig, StaticOccluder, PersonState, VideoCamera, VideoConfig,
                                    build_world, generate_video, make_detections, place_person, render_view,
                                    sample_attributes, walk_pose)
from keyreid.data.synthetic.video_render import occluder_patch
from keyreid.data.synthetic.walk import pelvis_lift, sample_gait
from keyreid.errors import DataError

SMALL = dict(cameras=2, seconds=3, fps=5, width=192, height=108, identities=8, supersample=1, seed=1)
KEYPOINT = {n: i for i, n in enumerate(COCO17.keypoints)}
BODY = [KEYPOINT[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee")]


def _tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("video") / "out"
    counts = generate_video(root, VideoConfig(**SMALL), workers=1)
    return root, counts


# ------------------------------------------------------------------ layout and contract


def test_layout_seqinfo_and_files(small):
    root, counts = small
    assert json.loads((root / ".keyreid-synth-video").read_text()) == {"format": "keyreid-synth-video", "version": 1}
    scene = json.loads((root / "scene.json").read_text())
    assert scene["format"] == "keyreid-synth-video" and scene["version"] == 1
    assert VideoConfig.from_dict(scene["config"]) == VideoConfig(**SMALL)
    assert [c["name"] for c in scene["cameras"]] == ["c1", "c2"] and scene["overlaps"] == [["c1", "c2"]]
    assert sorted(p["id"] for p in scene["people"]) == list(range(1, 9))
    assert counts == {"frames": 15, "cameras": 2, "boxes": counts["boxes"], "detections": counts["detections"]}
    total_gt = 0
    for cam in ("c1", "c2"):
        ini = configparser.ConfigParser()
        ini.optionxform = str  # MOTChallenge keys are case-sensitive
        ini.read(root / cam / "seqinfo.ini")
        assert dict(ini["Sequence"]) == {"name": cam, "imDir": "img1", "frameRate": "5", "seqLength": "15",
                                         "imWidth": "192", "imHeight": "108", "imExt": ".jpg"}
        frames = sorted(p.name for p in (root / cam / "img1").iterdir())
        assert frames == [f"{i:06d}.jpg" for i in range(1, 16)]
        assert Image.open(root / cam / "img1" / frames[0]).size == (192, 108)
        gt = _rows(root / cam / "gt" / "gt.txt")
        total_gt += len(gt)
        keys = [(int(r[0]), int(r[1])) for r in gt]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        for r in gt:
            assert len(r) == 9 and r[6:8] == ["1", "1"] and len(r[8].split(".")[1]) == 4
            left, top, w, h = map(int, r[2:6])  # 1-based, clipped: inside 1..W, 1..H
            assert left >= 1 and top >= 1 and w >= 1 and h >= 1 and left + w - 1 <= 192 and top + h - 1 <= 108
            assert 0 < float(r[8]) <= 1
        lines = (root / cam / "gt" / "keypoints.jsonl").read_text().splitlines()
        assert json.loads(lines[0]) == {"format": "keyreid-video-keypoints", "version": 1, "skeleton": "coco17"}
        entries = [json.loads(x) for x in lines[1:]]
        assert [(e["frame"], e["id"]) for e in entries] == keys
        for e in entries:
            kp = np.array(e["keypoints"], dtype=float)
            assert kp.shape == (17, 3)
            outside = (kp[:, 0] < -0.5) | (kp[:, 0] > 191.5) | (kp[:, 1] < -0.5) | (kp[:, 1] > 107.5)
            assert not (kp[outside, 2] > 0).any()
        det = _rows(root / cam / "det" / "det.txt")
        assert [int(r[0]) for r in det] == sorted(int(r[0]) for r in det)
        for r in det:
            assert len(r) == 10 and r[1] == "-1" and r[7:] == ["-1", "-1", "-1"]
            left, top, w, h, conf = map(float, r[2:7])
            assert left >= 1 - 1e-6 and top >= 1 - 1e-6 and left + w - 1 <= 192 + 1e-6 and top + h - 1 <= 108 + 1e-6
            assert 0 < conf <= 1
    assert total_gt == counts["boxes"]


def test_ids_are_global_and_the_plaza_is_seen_by_two_cameras_at_once(small):
    root, _ = small
    seen = {cam: {(int(r[0]), int(r[1])) for r in _rows(root / cam / "gt" / "gt.txt")} for cam in ("c1", "c2")}
    both = seen["c1"] & seen["c2"]  # the same person, same frame, in both cameras
    assert len(both) >= 5
    scene = json.loads((root / "scene.json").read_text())
    for p in scene["people"]:
        for cam, (first, last, rows) in p["seen"].items():
            assert rows == sum(1 for f, i in seen[cam] if i == p["id"]) and first <= last


def test_distant_cameras_see_the_same_people_after_an_unseen_transit():
    """Default world: c3 and c4 do not overlap anything; people walking between two views are
    unseen for several seconds (geometry only, no drawing)."""
    cfg = VideoConfig()
    world = build_world(cfg)
    assert world.overlaps() == [["c1", "c2"]]
    times = np.arange(0, cfg.seconds, 0.25)
    sightings = {}  # id -> [(t, camera index)]
    for t in times:
        for s in world.states(float(t)):
            for k, cam in enumerate(world.cameras):
                pl = place_person(cam, s, cfg.width, cfg.height)
                if pl is not None and 0 <= pl.cx < cfg.width and 0 <= pl.cy < cfg.height:
                    sightings.setdefault(s.id, []).append((float(t), k))
    transits = []
    for pid, seen in sightings.items():
        for (t0, a), (t1, b) in zip(seen, seen[1:]):
            if a != b and {a, b} != {0, 1}:
                transits.append((pid, t1 - t0))
    assert len({pid for pid, _ in transits}) >= 3, transits
    assert min(dt for _, dt in transits) >= 2.0, transits  # several seconds between the views


# ------------------------------------------------------------------ visibility, keypoints, yaw


def _scene():
    cfg = VideoConfig(cameras=1, seconds=1, fps=5, width=192, height=108, supersample=1)
    cam = VideoCamera("c1", 0.0, 0.0, 2.5, 0.0, math.radians(8), 160.0, 192, 108, 40.0,
                      {"blur": 0.0, "gain": 1.0, "cast": [1, 1, 1], "noise": 0.0})
    rng = np.random.default_rng(0)

    def person(pid, x, z, heading):
        return PersonState(pid, sample_attributes(rng, SynthConfig()), sample_gait(rng), 1.75, x, z, heading, 0.3)

    return cfg, cam, person, Image.new("RGB", (192, 108), (128, 128, 128))


def _render(cam, people, cfg, bg, occluders=()):
    patches = [occluder_patch(cam, o, cfg) for o in occluders]
    _, truths = render_view(cam, people, cfg, bg, patches, np.random.default_rng(1))
    return {t["id"]: t for t in truths}


def test_visibility_alone_behind_a_pillar_and_behind_a_nearer_person():
    cfg, cam, person, bg = _scene()
    far = person(1, 0.0, 9.0, math.pi / 2)
    alone = _render(cam, [far], cfg, bg)[1]
    assert alone["visibility"] > 0.99 and (alone["keypoints"][BODY, 2] == 1).all()
    x0, y0, x1, y1 = alone["box"]
    assert -0.5 <= x0 < x1 <= 191.5 and -0.5 <= y0 < y1 <= 107.5 and 25 < y1 - y0 < 40  # ~f * 1.75 / 9
    pillar = StaticOccluder("pillar", 0.0, 6.0, 1.2, 1.2, 3.0, 0.0, (40, 40, 40), None)
    hidden = _render(cam, [far], cfg, bg, [pillar])[1]
    assert hidden["visibility"] < 0.02 and (hidden["keypoints"][:, 2] == 0).all()
    # the same pillar behind the person hides nothing
    behind = StaticOccluder("pillar", 0.0, 12.0, 1.2, 1.2, 3.0, 0.0, (40, 40, 40), None)
    assert _render(cam, [far], cfg, bg, [behind])[1]["visibility"] > 0.99
    near = person(2, 0.0, 6.5, math.pi)
    both = _render(cam, [far, near], cfg, bg)
    assert both[1]["visibility"] < 0.4 and (both[1]["keypoints"][BODY, 2] == 0).all()
    assert both[2]["visibility"] > 0.99 and (both[2]["keypoints"][BODY, 2] == 1).all()


def test_yaw_follows_the_walking_direction():
    cfg, cam, person, bg = _scene()
    right = _render(cam, [person(1, 0.0, 8.0, -math.pi / 2)], cfg, bg)[1]["yaw"]
    left = _render(cam, [person(1, 0.0, 8.0, math.pi / 2)], cfg, bg)[1]["yaw"]
    toward = _render(cam, [person(1, 0.0, 8.0, math.pi)], cfg, bg)[1]["yaw"]
    assert abs(abs(right - left) - 180) < 1 and abs(right - 90) < 1 and toward % 360 < 1
    # in the generated world the image motion agrees with the yaw: sin(yaw) > 0 walking right
    world = build_world(VideoConfig())
    agree = checked = 0
    for t in np.arange(0, 30, 1.0):
        later = {s.id: s for s in world.states(float(t) + 0.3)}
        for s in world.states(float(t)):
            for cam in world.cameras:
                a = place_person(cam, s, 384, 216)
                b = place_person(cam, later[s.id], 384, 216) if s.id in later else None
                if a is not None and b is not None and abs(b.cx - a.cx) > 3 and abs(math.sin(a.yaw)) > 0.3:
                    checked += 1
                    agree += (b.cx > a.cx) == (math.sin(a.yaw) > 0)
    assert checked > 50 and agree / checked > 0.97


def test_walk_cycle_is_periodic_and_follows_the_distance_walked():
    gait = sample_gait(np.random.default_rng(3))
    a, b = walk_pose(0.3, gait), walk_pose(0.3 + 2 * math.pi, gait)
    assert np.allclose(a["left_ankle"], b["left_ankle"]) and np.allclose(a["right_wrist"], b["right_wrist"])
    half = walk_pose(math.pi / 2, gait)  # left leg forward, right arm forward
    assert half["left_ankle"][2] > 0.05 > -0.05 > half["right_ankle"][2] and half["right_wrist"][2] > half["left_wrist"][2]
    assert 0.45 < pelvis_lift(half) < 0.56
    w = build_world(VideoConfig(cameras=2, seconds=5, identities=3)).walkers[0]
    t = w.t0 + w.duration / 2
    s0, s1 = w.state(t), w.state(t + 1.0)
    assert s1.phase - s0.phase == pytest.approx(2 * math.pi * w.speed / (w.gait["stride"] * w.height), rel=1e-6)
    assert math.hypot(s1.x - s0.x, s1.z - s0.z) <= w.speed + 1e-6


# ------------------------------------------------------------------ detections


def test_detections_miss_occluded_people_more_and_add_false_positives():
    cfg = VideoConfig()
    rng = np.random.default_rng(0)
    gt = []
    for frame in range(1, 601):
        for pid in range(1, 8):
            h = rng.uniform(30, 120)
            x, y = rng.uniform(0, 300), rng.uniform(0, 216 - h)
            gt.append((frame, pid, x, y, x + 0.4 * h, y + h, float(rng.uniform(0.01, 1.0))))
    dets, src = make_detections(gt, 600, cfg, np.random.default_rng(5), 384, 216)
    found = np.zeros(len(gt), bool)
    found[[s for s in src if s >= 0]] = True
    vis = np.array([g[6] for g in gt])
    miss_low, miss_high = 1 - found[vis < 0.3].mean(), 1 - found[vis > 0.9].mean()
    assert miss_low > 0.4 and miss_high < 0.08 and miss_low > 5 * miss_high
    false = [d for d, s in zip(dets, src) if s < 0]
    assert 0.3 * 600 < len(false) < 0.5 * 600  # det_false_positives = 0.4 per frame
    conf = np.array([d[5] for d, s in zip(dets, src) if s >= 0])
    assert np.corrcoef(conf, vis[[s for s in src if s >= 0]])[0, 1] > 0.8
    assert np.mean([d[5] for d in false]) < conf.mean()
    # jitter in proportion to the box: centre errors over box height about det_jitter
    err = np.array([((d[2] + d[4]) - (gt[s][3] + gt[s][5])) / 2 / (gt[s][5] - gt[s][3])
                    for d, s in zip(dets, src) if s >= 0 and 10 < gt[s][3] and gt[s][5] < 200])
    assert 0.03 < err.std() < 0.07
    assert [d[0] for d in dets] == sorted(d[0] for d in dets)
    assert all(-0.5 <= d[1] < d[3] <= 383.5 and -0.5 <= d[2] < d[4] <= 215.5 for d in dets)


def _iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_det_file_has_misses_and_false_positives(small):
    root, _ = small
    missed = unmatched = 0
    for cam in ("c1", "c2"):
        gt, det = _rows(root / cam / "gt" / "gt.txt"), _rows(root / cam / "det" / "det.txt")
        for f in {int(r[0]) for r in gt + det}:
            g = [tuple(map(float, r[2:6])) for r in gt if int(r[0]) == f]
            d = [tuple(map(float, r[2:6])) for r in det if int(r[0]) == f]
            missed += sum(1 for b in g if not any(_iou(b, x) > 0.5 for x in d))
            unmatched += sum(1 for x in d if not any(_iou(b, x) > 0.5 for b in g))
    assert missed > 0 and unmatched > 0


# ------------------------------------------------------------------ determinism, folders, CLI


def test_same_bytes_whatever_the_number_of_workers(small, tmp_path):
    root, _ = small
    generate_video(tmp_path / "two", VideoConfig(**SMALL), workers=2)
    assert _tree_digest(tmp_path / "two") == _tree_digest(root)
    generate_video(tmp_path / "other", VideoConfig(**{**SMALL, "seed": 2}), workers=1)
    assert (tmp_path / "other" / "c1" / "gt" / "gt.txt").read_bytes() != (root / "c1" / "gt" / "gt.txt").read_bytes()


def test_overwrite_refuses_a_foreign_folder_and_replaces_its_own(tmp_path):
    tiny = VideoConfig(cameras=1, seconds=1, fps=3, width=64, height=48, identities=3, supersample=1)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(DataError, match="not a keyreid synthetic video") as e:
            generate_video(foreign, tiny, workers=1, overwrite=overwrite)
        assert str(foreign) in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    own = tmp_path / "own"
    generate_video(own, tiny, workers=1)
    with pytest.raises(DataError, match="pass --overwrite"):
        generate_video(own, tiny, workers=1)
    generate_video(own, VideoConfig(**{**tiny.to_dict(), "seed": 5}), workers=1, overwrite=True)
    assert json.loads((own / "scene.json").read_text())["config"]["seed"] == 5


def test_config_validation_and_round_trip():
    cfg = VideoConfig(cameras=3, transit_seconds=[2, 5])
    assert cfg.transit_seconds == (2, 5) and VideoConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert VideoConfig().frames == 300
    for bad, needle in ((dict(cameras=0), "cameras"), (dict(cameras=10), "cameras"), (dict(fps=0), "fps"),
                        (dict(transit_seconds=(5, 2)), "transit_seconds"), (dict(det_miss_base=1.5), "det_miss_base"),
                        (dict(width=8), "32x32"), (dict(supersample=0), "supersample")):
        with pytest.raises(ValueError, match=needle):
            VideoConfig(**bad)


def test_cli_writes_a_set_and_a_bad_config_key_is_one_line(tmp_path):
    out = tmp_path / "cli"
    args = ["synth-video", str(out), "--cameras", "1", "--seconds", "1", "--fps", "4", "--width", "96",
            "--height", "54", "--identities", "4", "--seed", "3", "-j", "1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    last = [line for line in r.output.splitlines() if line.strip()][-1]
    boxes = len((out / "c1" / "gt" / "gt.txt").read_text().splitlines())
    dets = len((out / "c1" / "det" / "det.txt").read_text().splitlines())
    assert last.startswith(f"wrote 4 frames of 1 cameras ({boxes} boxes, {dets} detections) to {out} in ")
    assert last.endswith(" s")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: 2\nsecnds: 3\n")
    keyreid = Path(sys.executable).with_name("keyreid")
    cmd = [str(keyreid)] if keyreid.exists() else [sys.executable, "-m", "keyreid.cli"]
    r = subprocess.run(cmd + ["synth-video", str(tmp_path / "never"), "--config", str(bad)],
                       capture_output=True, text=True)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "['secnds']" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "never").exists()


def test_people_pause_turn_back_and_walk_in_pairs():
    """What makes real footage hard for a motion model: a pause (the distance walked stands
    still for pause_for seconds, where a camera sees it), a turn back (out where they came in)
    and pairs (the same pace, a lane apart)."""
    from keyreid.data.synthetic import build_world

    world = build_world(VideoConfig(identities=40, pause_prob=1.0, turn_prob=1.0, group_prob=1.0, seed=3))
    walkers = {w.id: w for w in world.walkers}
    followers = [w for w in world.walkers if w.leader is not None]
    leaders = [w for w in world.walkers if w.leader is None]
    assert len(followers) >= 15 and all(walkers[f.leader].leader is None for f in followers)  # pairs, not chains
    for f in followers:
        lead = walkers[f.leader]
        assert f.speed == lead.speed and abs(f.t0 - lead.t0) <= 0.5
        gap = np.abs(f.path[:, 1] - lead.path[:, 1])
        assert np.all((gap <= 0.9 + 1e-9) & ((gap >= 0.6 - 1e-9) | (np.abs(f.path[:, 1]) >= world.route[2] + 1.5 - 1e-9)))
    paused = [w for w in leaders if w.pause_at is not None]
    assert len(paused) >= len(leaders) - 2
    for w in paused:
        t_stop = w.t0 + w.pause_at / w.speed
        d = w.distance(np.array([t_stop - 0.5, t_stop + 0.01, t_stop + w.pause_for - 0.01, t_stop + w.pause_for + 0.5]))
        assert d[1] == pytest.approx(w.pause_at) and d[2] == pytest.approx(w.pause_at)
        assert d[0] == pytest.approx(w.pause_at - 0.5 * w.speed) and d[3] == pytest.approx(w.pause_at + 0.5 * w.speed)
        x = w.where(np.array([w.pause_at]))[0, 0]
        assert any(lo <= x <= hi for lo, hi in world.views)  # a camera sees the pause
    for w in leaders:  # every one turned back: they leave where they came in, near their start
        assert w.exit == w.entry
        assert np.hypot(*(w.path[0] - w.path[-1])) < 0.6


def test_a_killed_render_is_named_unfinished_and_two_renders_at_once_are_refused(tmp_path):
    """Real processes: SIGKILL mid-render leaves a set that says it is unfinished (to synth-video
    and to keyreid track), and a second synth-video into a folder being written fails in one line."""
    import os
    import signal
    import time

    exe = str(Path(sys.executable).with_name("keyreid"))
    out = tmp_path / "video"
    env = {**os.environ, "KEYREID_PROGRESS": "off"}
    cmd = [exe, "synth-video", str(out), "--cameras", "2", "--seconds", "20", "--fps", "10", "-j", "1"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "c1" / "img1" / "000010.jpg").exists():
        time.sleep(0.02)
    second = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 2
    lines = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "another keyreid synth-video is writing here" in lines[0], second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, "the render ended before it could be killed"
    assert not (out / "scene.json").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2 and "holds an unfinished synthetic video (no scene.json" in again.stderr
    track = subprocess.run([exe, "track", str(out), "--tracker", "ocsort", "-o", str(tmp_path / "t")],
                           capture_output=True, text=True, env=env, timeout=120)
    assert track.returncode == 2 and "but has no seqinfo.ini: an unfinished copy or render" in track.stderr
    assert "Traceback" not in track.stderr + again.stderr


def test_a_foreign_folder_gets_no_lock_file(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not a keyreid synthetic video"):
        generate_video(mine, VideoConfig(cameras=1, seconds=1.0, fps=2, width=64, height=48, identities=1),
                       workers=1)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
