"""Track a folder of sequences end to end: what `keyreid track`, `keyreid demo --suite tracking`
and bench/tracking.py all run.

Checks every input before the first frame (frames present, detections parse), tracks each
sequence not yet finished in OUT (job.py: manifest, resume, lock), then optionally links the
tracks across cameras, draws them and evaluates them with TrackEval. `--eval`'s numbers are also
written to OUT/metrics.json, so a script reads them instead of parsing a table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from keyreid.errors import KeyreidError
from keyreid.tracking.job import TrackOutput, locked_output, settings_of
from keyreid.tracking.mot import find_sequences, read_mot, write_mot
from keyreid.tracking.run import MOTION_TRACKERS, check_tracker_name, require_boxmot, track_sequence, uses_appearance
from keyreid.tracking.render import RENDER_KINDS
from keyreid.utils.io import atomic_write_text


@dataclass
class TrackRequest:
    sequences: Path
    output: Path
    tracker: str = "botsort"
    checkpoint: Optional[Path] = None
    static_camera: bool = False
    options: dict = field(default_factory=dict)
    cross_camera: bool = False
    link_threshold: float | str = "auto"
    tracklet_samples: int = 8
    relink_same_camera: bool = False  # cross-camera: also re-join one camera's fragments by appearance
    render: Optional[str] = None
    evaluate: bool = False
    overwrite: bool = False
    batch_size: int = 64
    device: str = "auto"


@dataclass
class TrackSummary:
    sequences: list  # SequenceInfo
    done: dict  # name -> manifest entry (frames, fps, tracks, skipped...)
    resumed: int  # sequences already finished before this run
    identities: Optional[int] = None  # cross-camera: global identities
    tracklets: Optional[int] = None
    threshold: Optional[float] = None  # the link threshold used (auto: chosen from the video)
    rendered: list = field(default_factory=list)
    metrics: Optional[dict] = None
    appearance: bool = False


def check_request(req: TrackRequest) -> None:
    check_tracker_name(req.tracker)
    if req.link_threshold != "auto" and not (isinstance(req.link_threshold, (int, float))
                                             and 0.0 <= req.link_threshold <= 2.0):
        raise KeyreidError(f"--link-threshold {req.link_threshold!r}: auto, or a cosine distance in [0, 2]")
    if req.render is not None and req.render not in RENDER_KINDS:
        raise KeyreidError(f"--render {req.render!r}: one of {', '.join(RENDER_KINDS)}")
    if uses_appearance(req.tracker, req.options) and req.checkpoint is None:
        raise KeyreidError(f"{req.tracker} matches people by appearance: pass --checkpoint CKPT (a keyreid "
                           f"model), or --tracker-option use_embeddings=false, or choose --tracker "
                           f"{' / '.join(MOTION_TRACKERS)}")
    if req.cross_camera and req.checkpoint is None:
        raise KeyreidError("--cross-camera matches tracks by appearance: pass --checkpoint CKPT (a keyreid model)")


def track_folder(req: TrackRequest, bar=None, say: Callable[[str], None] = lambda s: None) -> TrackSummary:
    """Run `req`; `bar` a keyreid progress bar (or None), `say` prints a line to the user."""
    check_request(req)
    seqs = find_sequences(req.sequences)
    for info in seqs:  # every input problem before the first frame is tracked
        info.check_frames()
    dets = {info.name: read_mot(info.root / "det" / "det.txt", "det", info) for info in seqs}
    require_boxmot()
    encoder = None
    appearance_tracker = uses_appearance(req.tracker, req.options)
    if req.checkpoint is not None and (appearance_tracker or req.cross_camera):
        from keyreid.tracking.encoder import KeyreidEncoder

        encoder = KeyreidEncoder(req.checkpoint, batch_size=req.batch_size, device=req.device)
    elif req.checkpoint is not None:
        say(f"{req.tracker} uses motion only: --checkpoint is not used")
    appearance = encoder if appearance_tracker else None
    settings = settings_of(req.tracker, None if appearance is None else appearance.model, req.static_camera,
                           req.options)
    with locked_output(req.output):
        out = TrackOutput(req.output, settings, overwrite=req.overwrite)
        todo = [info for info in seqs if info.name not in out.done]
        summary = TrackSummary(seqs, out.done, len(seqs) - len(todo), appearance=appearance is not None)
        if summary.resumed:
            say(f"continuing in {req.output}: {summary.resumed} of {len(seqs)} sequences already tracked with "
                "these settings")
        for info in todo:
            d = dets[info.name]
            task = bar.add_task(f"{info.name} ({req.tracker})", total=info.length) if bar is not None else None
            progress = (lambda f, t=task: bar.update(t, completed=f)) if bar is not None else None
            res = track_sequence(info, d, req.tracker, appearance, req.static_camera, req.options, progress)
            write_mot(out.result_path(info.name), res.frames, res.ids, res.boxes, res.scores)
            out.finished(info.name, {"frames": info.length, "fps": round(res.fps, 2), "boxes": int(len(res.ids)),
                                     "tracks": int(len(set(res.ids.tolist()))), "detections": int(len(d)),
                                     "skipped": d.skipped, "clipped": d.clipped})
        results = {info.name: out.result_path(info.name) for info in seqs}
        global_results = {info.name: req.output / "global" / f"{info.name}.txt" for info in seqs}
        if req.cross_camera:
            from keyreid.tracking.associate import associate_sequences

            tracklets, labels, summary.threshold = associate_sequences(
                seqs, results, encoder, req.output, req.link_threshold, req.tracklet_samples, req.relink_same_camera)
            summary.tracklets, summary.identities = len(tracklets), len(set(labels.tolist()))
        if req.render is not None:
            from keyreid.tracking.render import render

            for info in seqs:
                drawn = global_results[info.name] if req.cross_camera else results[info.name]
                ext = "png" if req.render == "sheet" else "mp4"
                summary.rendered.append(render(req.render, req.output / "render" / f"{info.name}.{ext}", info,
                                               read_mot(drawn, "results", info)))
        if req.evaluate:
            from keyreid.tracking.metrics import cross_camera_idf1, evaluate_tracks

            metrics = evaluate_tracks(seqs, results)
            if req.cross_camera and req.relink_same_camera:
                # each camera again, with the linked ids: fragments of one person re-joined
                metrics["COMBINED_SEQ linked"] = evaluate_tracks(seqs, global_results)["COMBINED_SEQ"]
            if req.cross_camera:
                metrics["cross-camera"] = cross_camera_idf1(seqs, global_results)
            summary.metrics = metrics
            atomic_write_text(req.output / "metrics.json", json.dumps(
                {"settings": settings, "cross_camera": req.cross_camera, "link_threshold": summary.threshold,
                 "metrics": metrics, "fps": {n: e["fps"] for n, e in out.done.items()}}, indent=1) + "\n")
    return summary
