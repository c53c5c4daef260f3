"""`keyreid demo --suite tracking`: track a synthetic multi-camera video set with BoxMOT's trackers
and keyreid encoders, and print tracker x encoder with TrackEval's metrics.

Steps (each reused when already done, so a killed suite picks up where it stopped):
1. the default demo's kae and bnneck runs (OUTPUT/seedS/kae, /bnneck: reused when `keyreid demo`
   made them, trained otherwise) and two encoders made from them: kae exported to ONNX, and the
   ImageNet MobileNetV2 features the demo starts from (the backbone with its offline ImageNet
   weights and an untrained BNNeck: what a tracker gets without re-ID training);
2. a synthetic video set (`keyreid synth-video`, DEMO_VIDEO: 4 cameras, shorter than the default)
   under OUTPUT/seedS/tracking/video;
3. every row of TRACKING_ROWS through keyreid.tracking.pipeline (the code `keyreid track` runs),
   static cameras, cross-camera linking for the rows with an encoder; the table.

bench/tracking.py runs the same rows over several video seeds at the default video length.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from keyreid.tracking.pipeline import TrackRequest, track_folder

console = Console()

ENCODERS = ("imagenet", "bnneck", "kae", "kae-onnx")
# (tracker, encoder): None is the same tracker on motion alone (BoxMOT's use_embeddings=false for
# BoT-SORT and DeepOCSORT), the baseline an encoder is measured against
TRACKING_ROWS: tuple[tuple[str, Optional[str]], ...] = (
    ("bytetrack", None), ("ocsort", None),
    *((t, e) for t in ("botsort", "deepocsort") for e in (None, *ENCODERS)),
)
DEMO_VIDEO = {"seconds": 12.0}  # VideoConfig overrides of the suite's short set


def imagenet_checkpoint(path: Path, data_root: Path) -> Path:
    """The demo's MobileNetV2 with its offline ImageNet weights and an untrained bnneck head
    (eval-mode BatchNorm at its initial statistics passes the pooled features through)."""
    if path.is_file():
        return path
    import torch

    from keyreid.config import load_config
    from keyreid.demo.run import DEMO_CONFIG
    from keyreid.inference import card_for
    from keyreid.models.build import build_model
    from keyreid.utils.checkpoint import save_checkpoint

    cfg = load_config(DEMO_CONFIG, ["model.head=bnneck", f"data.root={data_root}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 1, None).eval()
    state = model.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"model": state, "config": dataclasses.asdict(cfg),
                           "card": card_for(cfg, model, None, 1, state), "label_map": {}})
    return path


def onnx_export(checkpoint: Path, out: Path) -> Path:
    if out.is_file() and Path(str(out) + ".json").is_file():
        return out
    from keyreid.export.onnx import export_onnx

    export_onnx(checkpoint, out, log=lambda s: None)
    return out


def encoders(output: Path, data_root: Path, seed: int, overrides: Sequence[str] = ()) -> dict[str, Path]:
    from keyreid.demo.generation import demo_reid_run

    kae = demo_reid_run("kae", output, data_root, seed, overrides)
    bnneck = demo_reid_run("bnneck", output, data_root, seed, overrides)
    work = output / f"seed{seed}" / "tracking"
    return {"imagenet": imagenet_checkpoint(work / "imagenet_mobilenetv2.pt", data_root), "bnneck": bnneck,
            "kae": kae, "kae-onnx": onnx_export(kae, work / "kae.onnx")}


def ensure_video(root: Path, seed: int, overrides: Optional[dict] = None, workers: Optional[int] = None) -> Path:
    """A synthetic video set at `root` (reused when complete with the same config)."""
    import json

    from keyreid.data.synthetic import VideoConfig, generate_video

    cfg = VideoConfig(**{**(overrides or {}), "seed": seed})
    scene = root / "scene.json"
    if scene.is_file() and VideoConfig.from_dict(json.loads(scene.read_text()).get("config", {})) == cfg:
        return root
    console.print(f"rendering the video set (seed {seed}) -> {root}")
    generate_video(root, cfg, workers=workers, overwrite=True)
    return root


@dataclasses.dataclass
class RowResult:
    tracker: str
    encoder: Optional[str]
    hota: float
    idf1: float
    assa: float
    idsw: int
    cross_idf1: Optional[float]
    fps: float  # frames per second per camera (decode, encoder, tracker), mean over cameras
    seconds: float


def run_row(video: Path, out: Path, tracker: str, encoder: Optional[str], checkpoints: dict,
            link_threshold="auto", appearance_options: Optional[dict] = None) -> RowResult:
    """One table row; `appearance_options` go to the tracker only in rows with an encoder."""
    ckpt = checkpoints[encoder] if encoder else None
    options = {"use_embeddings": False} if encoder is None and tracker in ("botsort", "deepocsort") else {}
    if encoder is not None:
        options.update(appearance_options or {})
    t0 = time.perf_counter()
    s = track_folder(TrackRequest(video, out, tracker, ckpt, static_camera=True, options=options,
                                  cross_camera=ckpt is not None, link_threshold=link_threshold, evaluate=True))
    m = s.metrics["COMBINED_SEQ"]
    cross = s.metrics.get("cross-camera")
    return RowResult(tracker, encoder, m["HOTA"], m["IDF1"], m["AssA"], int(m["IDSW"]),
                     None if cross is None else cross["IDF1"], float(np.mean([e["fps"] for e in s.done.values()])),
                     time.perf_counter() - t0)


def table(rows: Sequence[RowResult], title: str) -> Table:
    t = Table(title=title)
    for c in ("tracker", "encoder", "HOTA", "IDF1", "AssA", "ID sw.", "cross-camera IDF1", "frames/s per camera"):
        t.add_column(c, justify="left" if c in ("tracker", "encoder") else "right")
    for r in rows:
        t.add_row(r.tracker, r.encoder or "none (motion only)", f"{r.hota:.1f}", f"{r.idf1:.1f}", f"{r.assa:.1f}",
                  str(r.idsw), "" if r.cross_idf1 is None else f"{r.cross_idf1:.1f}", f"{r.fps:.1f}")
    return t


def run_tracking_demo(output: Path, data_root: Path, seed: int, overrides: Sequence[str] = (),
                      only: Optional[Sequence[str]] = None, say: Callable[[str], None] = console.print) -> list:
    """The suite (module docstring); `only` limits it to rows whose tracker or encoder is named."""
    from keyreid.demo.run import ensure_synthetic

    ensure_synthetic(data_root)
    ckpts = encoders(output, data_root, seed, overrides)
    work = output / f"seed{seed}" / "tracking"
    video = ensure_video(work / "video", seed, DEMO_VIDEO)
    rows = []
    for tracker, encoder in TRACKING_ROWS:
        if only and tracker not in only and (encoder or "none") not in only:
            continue
        r = run_row(video, work / "tracks" / f"{tracker}-{encoder or 'none'}", tracker, encoder, ckpts)
        say(f"{tracker} + {encoder or 'no appearance'}: IDF1 {r.idf1:.1f}, {r.fps:.1f} frames/s per camera")
        rows.append(r)
    console.print(table(rows, f"Tracking, synthetic video seed {seed} ({DEMO_VIDEO['seconds']:.0f} s x 4 cameras)"))
    return rows
