"""Run one of BoxMOT's trackers over a MOTChallenge sequence's detections.

The tracker algorithms (Kalman filters, association, camera-motion compensation) are BoxMOT's;
this file only feeds them frames and detections in order, with a keyreid encoder where the
tracker uses appearance, and collects the tracks as MOT rows. Frames are read through keyreid's
one image reader, so a corrupt frame is the same one-line error as anywhere else.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from keyreid.data.images import read_image
from keyreid.errors import KeyreidError
from keyreid.tracking.mot import MotRows, SequenceInfo

APPEARANCE_TRACKERS = ("botsort", "deepocsort", "strongsort")
MOTION_TRACKERS = ("bytetrack", "ocsort")
TRACKERS = APPEARANCE_TRACKERS + MOTION_TRACKERS
# BoxMOT's switch for camera-motion compensation, per tracker (StrongSORT has none)
_CMC_OFF = {"botsort": ("use_cmc", False), "deepocsort": ("cmc_off", True)}
_FRAME_RATE = ("botsort", "bytetrack")  # trackers whose buffers are set in frames per second


class TrackingUnavailable(KeyreidError):
    """BoxMOT or TrackEval is not installed."""


def require_boxmot():
    try:
        import boxmot
        import boxmot.utils  # configures BoxMOT's logger (level INFO) on import: before we quieten it
    except ImportError:
        raise TrackingUnavailable("tracking needs BoxMOT: pip install 'keyreid[track]' && "
                                  "pip install --no-deps boxmot==25.0.0 trackeval==1.3.0") from None
    logging.getLogger("boxmot").setLevel(logging.WARNING)  # it logs every tracker's parameters at INFO
    return boxmot


def uses_appearance(name: str, options: Optional[dict] = None) -> bool:
    """BoT-SORT and DeepOCSORT run on motion alone with use_embeddings=false (BoxMOT's switch):
    the same tracker without appearance, the fair baseline of an encoder."""
    return name in APPEARANCE_TRACKERS and (options or {}).get("use_embeddings", True) is not False


def check_tracker_name(name: str) -> str:
    if name not in TRACKERS:
        raise KeyreidError(f"unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
    return name


def make_tracker(name: str, frame_rate: float, static_camera: bool = False, options: Optional[dict] = None):
    """A fresh BoxMOT tracker (one per sequence: trackers keep state)."""
    check_tracker_name(name)
    boxmot = require_boxmot()
    from boxmot.trackers.specs import TrackerSpec

    opts = dict(options or {})
    if name in _FRAME_RATE:
        opts.setdefault("frame_rate", int(round(frame_rate)))
    if static_camera and name in _CMC_OFF:
        key, value = _CMC_OFF[name]
        opts.setdefault(key, value)
    try:
        return boxmot.create_tracker(TrackerSpec(name=name, options=tuple(sorted(opts.items()))))
    except (TypeError, ValueError) as e:
        raise KeyreidError(f"tracker {name}: {e}") from None


@dataclass
class SequenceResult:
    frames: np.ndarray  # int64 [N]
    ids: np.ndarray  # int64 [N]
    boxes: np.ndarray  # float32 [N, 4] 0-based xyxy
    scores: np.ndarray  # float32 [N]
    seconds: float  # wall time, reading frames included
    frame_count: int

    @property
    def fps(self) -> float:
        return self.frame_count / max(self.seconds, 1e-9)


def track_sequence(info: SequenceInfo, dets: MotRows, tracker_name: str, encoder=None,
                   static_camera: bool = False, options: Optional[dict] = None,
                   progress: Optional[Callable[[int], None]] = None) -> SequenceResult:
    """Track every frame of `info` with its detections; `progress(frames_done)` after each."""
    require_boxmot()
    from boxmot.pipelines.tracking import TrackingPipeline
    from boxmot.structures import Boxes, Detections, Frame

    appearance = uses_appearance(tracker_name, options)
    if appearance and encoder is None:
        raise KeyreidError(f"{tracker_name} matches people by appearance: pass --checkpoint (a keyreid model), "
                           f"or choose a motion-only tracker ({', '.join(MOTION_TRACKERS)})")
    tracker = make_tracker(tracker_name, info.frame_rate, static_camera, options)
    pipeline = TrackingPipeline(detector=None, tracker=tracker, reid=encoder if appearance else None)
    slices = dets.frame_slices(info.length)
    out_f, out_id, out_box, out_score = [], [], [], []
    start = time.perf_counter()
    for f in range(1, info.length + 1):
        image = np.array(read_image(info.frame_path(f)))  # writable: torch shares its memory
        if image.shape[:2] != (info.height, info.width):
            raise KeyreidError(f"{info.frame_path(f)}: {image.shape[1]}x{image.shape[0]} pixels, but "
                               f"seqinfo.ini says {info.width}x{info.height}")
        sample = f"{info.name}:{f}"
        frame = Frame(image=torch.from_numpy(image).permute(2, 0, 1).contiguous(), sample_id=sample,
                      sequence_id=info.name, frame_index=f)
        s = slices[f]
        boxes = torch.from_numpy(np.ascontiguousarray(dets.boxes[s], np.float32)).reshape(-1, 4)
        detections = Detections(geometry=Boxes(boxes), scores=torch.from_numpy(dets.scores[s].copy()),
                                class_ids=torch.zeros(len(boxes), dtype=torch.int64), sample_id=sample)
        tracks = pipeline.step_detections(frame, detections).tracks
        if len(tracks):
            out_f.append(np.full(len(tracks), f, np.int64))
            out_id.append(tracks.track_ids.numpy().astype(np.int64))
            out_box.append(tracks.geometry.values.numpy().astype(np.float32))
            out_score.append(tracks.scores.numpy().astype(np.float32))
        if progress is not None:
            progress(f)
    seconds = time.perf_counter() - start

    def cat(parts, dtype, shape=(0,)):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    ids = cat(out_id, np.int64)
    # MOTChallenge ids are positive; BoxMOT's count from 0 or 1 by tracker: number them 1, 2, ...
    # in order of first appearance, the same for every tracker
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, len(first) + 1)
    return SequenceResult(cat(out_f, np.int64), rank[inverse] if len(ids) else ids, cat(out_box, np.float32, (0, 4)),
                          cat(out_score, np.float32), seconds, info.length)
