"""Planning a whole set from its seed, writing it (any number of processes), reading it back."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from keyreid.data.keypoints import COCO17, write_sidecar
from keyreid.data.synthetic.cameras import sample_camera
from keyreid.data.synthetic.config import (MARKER, PALETTE, PARTS, SKIN, SPLIT_DIRS, SYNTH_FORMAT, SYNTH_VERSION,
                                           TEXTURED_PARTS, TEXTURES, SynthConfig)
from keyreid.data.synthetic.identities import sample_attributes, signature
from keyreid.data.synthetic.render import render_image


@dataclass
class SynthPlan:
    cameras: list[dict]
    identities: dict[int, dict]  # pid -> attributes
    splits: dict[str, list[int]]  # "train" / "test" -> pids
    items: list[dict] = field(default_factory=list)


def plan_dataset(cfg: SynthConfig) -> SynthPlan:
    """Decide every image (who, which camera, which split, file name) from the seed alone."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
    C = cfg.cameras
    cameras = [sample_camera(rng, cfg, c) for c in range(1, C + 1)]
    n_people = cfg.train_identities + cfg.test_identities
    n_extra_people = (cfg.distractors - int(round(cfg.distractors * cfg.clutter_fraction))) + cfg.junk
    seen: set[str] = set()
    people = []
    while len(people) < n_people + n_extra_people:  # every person looks different
        a = sample_attributes(rng, cfg)
        sig = signature(a)
        if sig not in seen:
            seen.add(sig)
            people.append(a)
    identities = {pid: people[pid - 1] for pid in range(1, n_people + 1)}
    train_pids = list(range(1, cfg.train_identities + 1))
    test_pids = list(range(cfg.train_identities + 1, n_people + 1))
    extra = iter(people[n_people:])
    items: list[dict] = []

    def add(split, kind, pid, camid, attrs):
        items.append({"index": len(items), "split": split, "kind": kind, "pid": pid,
                      "camera": camid, "attributes": attrs})

    for pid in train_pids:
        n = int(rng.integers(cfg.train_images[0], cfg.train_images[1] + 1))
        k = int(rng.integers(min(cfg.train_cameras[0], C), min(cfg.train_cameras[1], C) + 1))
        cams = sorted(int(c) + 1 for c in rng.choice(C, min(k, n), replace=False))
        per_cam = cams + [int(c) for c in rng.choice(cams, n - len(cams))]
        for camid in sorted(per_cam):
            add("train", "person", pid, camid, identities[pid])
    for pid in test_pids:
        k = int(rng.integers(min(cfg.test_cameras[0], C), min(cfg.test_cameras[1], C) + 1))
        for camid in sorted(int(c) + 1 for c in rng.choice(C, k, replace=False)):
            m = int(rng.integers(cfg.test_images_per_camera[0], cfg.test_images_per_camera[1] + 1))
            for i in range(m):  # the first image of each camera is the query
                add("query" if i == 0 else "gallery", "person", pid, camid, identities[pid])
    n_clutter = int(round(cfg.distractors * cfg.clutter_fraction))
    for i in range(cfg.distractors):
        camid = int(rng.integers(1, C + 1))
        if i < n_clutter:
            add("gallery", "clutter", 0, camid, None)
        else:
            add("gallery", "person", 0, camid, next(extra))
    for _ in range(cfg.junk):
        add("gallery", "junk", -1, int(rng.integers(1, C + 1)), next(extra))

    # frame numbers: increasing per camera in a random order of appearance
    frame = {c: 0 for c in range(1, C + 1)}
    for idx in rng.permutation(len(items)):
        it = items[int(idx)]
        frame[it["camera"]] += int(rng.integers(1, 40))
        pid = "-1" if it["pid"] < 0 else f"{it['pid']:04d}"
        it["path"] = f"{SPLIT_DIRS[it['split']]}/{pid}_c{it['camera']}s1_{frame[it['camera']]:06d}_00.jpg"
    if max(frame.values()) > 999999:
        raise ValueError("too many images per camera for 6-digit frame numbers")
    return SynthPlan(cameras, identities, {"train": train_pids, "test": test_pids}, items)


_WORKER: dict = {}


def _init_worker(root: str, cfg_dict: dict, cameras: list[dict]) -> None:
    _WORKER["root"] = Path(root)
    _WORKER["cfg"] = SynthConfig.from_dict(cfg_dict)
    _WORKER["cameras"] = {c["camera"]: c for c in cameras}


def _work(item: dict) -> tuple[str, list, dict]:
    cfg = _WORKER["cfg"]
    data, kp, meta = render_image(item, _WORKER["cameras"][item["camera"]], cfg)
    (_WORKER["root"] / item["path"]).write_bytes(data)
    return item["path"], kp.tolist(), meta


def is_synthetic_tree(root: str | Path) -> bool:
    """True when `root` carries keyreid's own marker: the MARKER file written before the first
    image, or a synth.json of this generator (sets written before the marker existed)."""
    root = Path(root)
    if (root / MARKER).is_file():
        return True
    try:
        return json.loads((root / "synth.json").read_text(encoding="utf-8")).get("format") == SYNTH_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _clear_for_generation(out: Path, overwrite: bool) -> None:
    """Make `out` ready for a new set, deleting only a set this generator wrote.

    A folder without keyreid's marker that holds any of the generator's targets is somebody's
    dataset (a real Market-1501 tree has the same folder names): it is never touched.
    """
    from keyreid.errors import DataError

    targets = [out / d for d in SPLIT_DIRS.values()] + [out / "keypoints.jsonl", out / "synth.json"]
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not is_synthetic_tree(out):
        raise DataError(out, f"holds {existing[0].name} but is not a keyreid synthetic set (no "
                             f"{MARKER} or synth.json); refusing to write into it: choose an empty "
                             f"or new folder")
    if existing and not overwrite:
        raise DataError(out, f"a synthetic set is already there ({existing[0].name}); pass "
                             f"--overwrite to replace it")
    for t in existing:
        if t.is_symlink() or not t.is_dir():
            t.unlink()  # a link is removed, never what it points to
        else:
            shutil.rmtree(t)
    out.mkdir(parents=True, exist_ok=True)
    # written first, so a generation killed half-way can still be replaced
    (out / MARKER).write_text(json.dumps({"format": SYNTH_FORMAT, "version": SYNTH_VERSION}) + "\n",
                              encoding="utf-8")


def generate(out: str | Path, cfg: SynthConfig | None = None, workers: int | None = None,
             overwrite: bool = False,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Render the whole set under `out`; returns per-split image counts.

    workers: processes (None = all CPUs, 1 = in this process); the output does not depend on it.
    progress: called as progress(done, total) while images are written.
    """
    cfg = cfg or SynthConfig()
    out = Path(out)
    _clear_for_generation(out, overwrite)
    for d in SPLIT_DIRS.values():
        (out / d).mkdir(parents=True, exist_ok=True)

    plan = plan_dataset(cfg)
    total = len(plan.items)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    keypoints: dict[str, np.ndarray] = {}
    images: dict[str, dict] = {}
    init_args = (str(out), asdict(cfg), plan.cameras)

    def collect(result, done):
        rel, kp, meta = result
        keypoints[rel] = np.asarray(kp, dtype=np.float32)
        images[rel] = meta
        if progress is not None:
            progress(done, total)

    if workers == 1:
        _init_worker(*init_args)
        for i, item in enumerate(plan.items, 1):
            collect(_work(item), i)
    else:
        # spawn: safe when the caller has threads (torch), same result as in-process
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
            for i, res in enumerate(pool.imap_unordered(_work, plan.items, chunksize=16), 1):
                collect(res, i)

    write_sidecar(out / "keypoints.jsonl", COCO17, keypoints)
    by_path = {it["path"]: it for it in plan.items}
    counts = {s: sum(1 for it in plan.items if it["split"] == s) for s in SPLIT_DIRS}
    counts["distractors"] = sum(1 for it in plan.items if it["pid"] == 0)
    counts["junk"] = sum(1 for it in plan.items if it["pid"] == -1)
    meta = {
        "format": SYNTH_FORMAT,
        "version": SYNTH_VERSION,
        "config": cfg.to_dict(),
        "skeleton": COCO17.name,
        "palette": [{"name": n, "rgb": list(rgb)} for n, rgb in PALETTE],
        "skin": list(SKIN),
        "parts": list(PARTS),
        "textured_parts": list(TEXTURED_PARTS),
        "textures": list(TEXTURES),
        "cameras": plan.cameras,
        "splits": plan.splits,
        "identities": {f"{pid:04d}": a for pid, a in plan.identities.items()},
        # distractor people and junk have their own attributes (none for clutter), keyed by path
        "others": {p: by_path[p]["attributes"] for p in sorted(by_path) if by_path[p]["pid"] <= 0},
        "images": {p: images[p] for p in sorted(images)},
        "counts": counts,
    }
    tmp = out / "synth.json.tmp"
    tmp.write_text(json.dumps(meta, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / "synth.json")
    return counts


def load_synth(root: str | Path) -> dict:
    """Read OUT/synth.json (config, cameras, true attributes)."""
    meta = json.loads((Path(root) / "synth.json").read_text(encoding="utf-8"))
    if meta.get("format") != SYNTH_FORMAT:
        raise ValueError(f"{root}/synth.json is not a keyreid synthetic description")
    return meta


def true_attributes(meta: dict, rel_path: str) -> Optional[dict]:
    """True attributes of the person in an image (None for clutter)."""
    if rel_path in meta["others"]:
        return meta["others"][rel_path]
    pid = Path(rel_path).name.split("_")[0]
    return meta["identities"][pid]
