"""Writing a synthetic video set in the MOTChallenge layout (any number of processes).

Layout under OUT (one folder per camera, c1..cN)::

    .keyreid-synth-video      marker, written first: --overwrite replaces only folders carrying it
    scene.json                config, cameras, overlapping views, people (attributes, walks);
                              written last: a set without it is unfinished (a stopped run)
    cN/seqinfo.ini            MOTChallenge sequence info
    cN/img1/000001.jpg ...    frames from 1
    cN/gt/gt.txt              frame,id,bb_left,bb_top,bb_width,bb_height,1,1,visibility
    cN/gt/keypoints.jsonl     a header, then one COCO-17 line per gt row
    cN/det/det.txt            frame,-1,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1

Boxes in the .txt files are MOTChallenge pixels: the image's top-left pixel is (1, 1). A gt box
holds every output pixel the person's body touches (whole pixels, clipped to the frame); keypoints
are keyreid pixels (0-based, pixel centres at integers). Ids are global: the same person has the
same id in every camera. Each frame and each camera's detections have their own seeds, so the
output is byte-identical whatever the number of processes.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from keyreid.data.keypoints import COCO17
from keyreid.data.synthetic.video_config import KEYPOINTS_FORMAT, VIDEO_FORMAT, VIDEO_MARKER, VIDEO_VERSION, VideoConfig
from keyreid.data.synthetic.video_detect import make_detections
from keyreid.data.synthetic.video_render import render_frame
from keyreid.data.synthetic.world import World, build_world
from keyreid.errors import DataError
from keyreid.utils.io import atomic_write_text, file_lock

CHUNK = 25  # frames per task: small enough to balance the processes, big enough to amortise
_CAMERA_DIR = re.compile(r"c[1-9]")
LOCK = ".keyreid-synth-video.lock"  # held while a run writes: a second writer fails in one line
_WORKER: dict = {}


def _init_worker(root: str, cfg_dict: dict) -> None:
    _WORKER["root"] = Path(root)
    _WORKER["world"] = build_world(VideoConfig.from_dict(cfg_dict))


def _work(task: tuple[int, int, int]) -> tuple[int, list]:
    """Render frames [start, stop) of camera `index`; write the JPEGs; return their truths."""
    index, start, stop = task
    world: World = _WORKER["world"]
    folder = _WORKER["root"] / world.cameras[index].name / "img1"
    out = []
    for frame in range(start, stop):
        image, truths = render_frame(world, index, frame)
        Image.fromarray(image).save(folder / f"{frame:06d}.jpg", format="JPEG", quality=world.cfg.jpeg_quality)
        out.append((frame, [(t["id"], t["box"], t["visibility"], np.round(t["keypoints"], 2).tolist())
                            for t in truths if t["visibility"] > 0]))
    return index, out


def _refuse_foreign(out: Path) -> bool:
    """True when `out` holds something; a folder of somebody else's (no marker) is refused before
    anything, the lock file included, is written into it."""
    if out.exists() and not out.is_dir():
        raise DataError(out, "is a file, not a folder; choose a new or empty folder")
    full = out.is_dir() and any(p.name != LOCK for p in out.iterdir())
    if full and not (out / VIDEO_MARKER).is_file():
        raise DataError(out, f"is not empty and is not a keyreid synthetic video (no {VIDEO_MARKER}); "
                             "refusing to write into it: choose an empty or new folder")
    return full


def _prepare(out: Path, overwrite: bool) -> None:
    """Make `out` ready, deleting only what this generator wrote there before."""
    if _refuse_foreign(out):
        if not overwrite:
            what = ("a synthetic video is already there" if (out / "scene.json").is_file() else
                    "holds an unfinished synthetic video (no scene.json: its run was stopped)")
            raise DataError(out, f"{what}; pass --overwrite to replace it")
        for p in out.iterdir():
            if p.name == "scene.json" or (_CAMERA_DIR.fullmatch(p.name) and p.is_dir() and not p.is_symlink()):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / VIDEO_MARKER, json.dumps({"format": VIDEO_FORMAT, "version": VIDEO_VERSION}) + "\n")


def mot_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """Output-pixel extent (x0, y0, x1, y1) -> MOTChallenge (left, top, width, height) of the whole
    pixels it touches, clipped to the frame."""
    x0 = max(0, math.floor(box[0] + 0.5 + 1e-6))
    y0 = max(0, math.floor(box[1] + 0.5 + 1e-6))
    x1 = min(width, math.ceil(box[2] + 0.5 - 1e-6))
    y1 = min(height, math.ceil(box[3] + 0.5 - 1e-6))
    return x0 + 1, y0 + 1, x1 - x0, y1 - y0


def _camera_files(out: Path, world: World, index: int, frames: dict[int, list]) -> tuple[int, int, dict]:
    """gt.txt, keypoints.jsonl, det.txt and seqinfo.ini of one camera: (boxes, detections, seen)."""
    cfg, cam = world.cfg, world.cameras[index]
    W, H = cfg.width, cfg.height
    gt_lines, kp_lines, gt = [], [json.dumps({"format": KEYPOINTS_FORMAT, "version": 1, "skeleton": COCO17.name})], []
    seen: dict[int, list[int]] = {}  # id -> [first frame, last frame, rows]
    for frame in sorted(frames):
        for pid, box, vis, kp in sorted(frames[frame], key=lambda r: r[0]):
            left, top, w, h = mot_box(box, W, H)
            gt_lines.append(f"{frame},{pid},{left},{top},{w},{h},1,1,{max(vis, 1e-4):.4f}")
            kp_lines.append(json.dumps({"frame": frame, "id": pid,
                                        "keypoints": [[x, y, int(v)] for x, y, v in kp]}))
            # the detector sees the clipped box, in output pixels
            gt.append((frame, pid, left - 1.5, top - 1.5, left - 1.5 + w, top - 1.5 + h, vis))
            s = seen.setdefault(pid, [frame, frame, 0])
            s[1], s[2] = frame, s[2] + 1
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 3, index + 1]))
    dets, _ = make_detections(gt, cfg.frames, cfg, rng, W, H)
    det_lines = [f"{f},-1,{l + 1.5:.2f},{t + 1.5:.2f},{r - l:.2f},{b - t:.2f},{c:.4f},-1,-1,-1"
                 for f, l, t, r, b, c in dets]
    folder = out / cam.name
    atomic_write_text(folder / "gt" / "gt.txt", "".join(line + "\n" for line in gt_lines))
    atomic_write_text(folder / "gt" / "keypoints.jsonl", "".join(line + "\n" for line in kp_lines))
    atomic_write_text(folder / "det" / "det.txt", "".join(line + "\n" for line in det_lines))
    atomic_write_text(folder / "seqinfo.ini",
                      f"[Sequence]\nname={cam.name}\nimDir=img1\nframeRate={cfg.fps}\nseqLength={cfg.frames}\n"
                      f"imWidth={W}\nimHeight={H}\nimExt=.jpg\n")
    return len(gt_lines), len(det_lines), seen


def scene_description(world: World, seen: list[dict]) -> dict:
    """What scene.json holds; `seen[c]` maps id -> [first frame, last frame, gt rows] in camera c."""
    cams = []
    for k, cam in enumerate(world.cameras):
        d = cam.to_dict()
        d["route_view"] = [round(v, 3) for v in world.views[k]]
        cams.append(d)
    people = []
    for w in world.walkers:
        d = w.to_dict()
        d["seen"] = {world.cameras[c].name: seen[c][w.id] for c in range(len(seen)) if w.id in seen[c]}
        people.append(d)
    return {
        "format": VIDEO_FORMAT,
        "version": VIDEO_VERSION,
        "config": world.cfg.to_dict(),
        "skeleton": COCO17.name,
        "units": ("metres, right-handed: X along the route (west = low X), Y up, Z across it; a heading h "
                  "points along (sin h, cos h) in (X, Z); yaw 0 = walking toward the camera, 90 = to the "
                  "image's right"),
        "route": {"x_min": world.route[0], "x_max": world.route[1], "half_width": world.route[2]},
        "doors": [{"x": x, "side": s} for x, s in world.doors],
        "cameras": cams,
        "overlaps": world.overlaps(),
        "occluders": [o.to_dict() for o in world.occluders],
        "people": people,
    }


def generate_video(out: str | Path, cfg: Optional[VideoConfig] = None, workers: Optional[int] = None,
                   overwrite: bool = False, progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Render the whole video set under `out`; returns counts (frames, cameras, boxes, detections).

    workers: processes (None = all CPUs, 1 = in this process); the output does not depend on it.
    progress: called as progress(done, total) with frames over all cameras.
    """
    cfg = cfg or VideoConfig()
    out = Path(out)
    _refuse_foreign(out)
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / LOCK, 0.0, f"{out}: another keyreid synth-video is writing here; wait for it or "
                                    "choose another folder"):
        _prepare(out, overwrite)
        return _render(out, cfg, workers, progress)


def _render(out: Path, cfg: VideoConfig, workers: Optional[int], progress) -> dict:
    """Every frame, then each camera's files, then scene.json last: its presence says the set is whole."""
    world = build_world(cfg)
    for cam in world.cameras:
        (out / cam.name / "img1").mkdir(parents=True, exist_ok=True)
    tasks = [(k, s, min(s + CHUNK, cfg.frames + 1))
             for k in range(cfg.cameras) for s in range(1, cfg.frames + 1, CHUNK)]
    total = cfg.cameras * cfg.frames
    truths: list[dict[int, list]] = [{} for _ in world.cameras]
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    done = 0
    if progress is not None:
        progress(0, total)

    def collect(result) -> None:
        nonlocal done
        index, frames = result
        truths[index].update(frames)
        done += len(frames)
        if progress is not None:
            progress(done, total)

    init_args = (str(out), cfg.to_dict())
    if workers == 1:
        _init_worker(*init_args)
        for task in tasks:
            collect(_work(task))
    else:
        ctx = mp.get_context("spawn")  # safe when the caller has threads (torch); same result
        with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=init_args) as pool:
            for result in pool.imap_unordered(_work, tasks):
                collect(result)
    boxes = detections = 0
    seen = []
    for k in range(cfg.cameras):
        b, d, s = _camera_files(out, world, k, truths[k])
        boxes, detections = boxes + b, detections + d
        seen.append(s)
    atomic_write_text(out / "scene.json", json.dumps(scene_description(world, seen), indent=1) + "\n")
    return {"frames": cfg.frames, "cameras": cfg.cameras, "boxes": boxes, "detections": detections}
