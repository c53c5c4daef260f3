"""Tracklets: one camera's track as a unit of cross-camera matching.

A tracklet's appearance is the mean of the unit embeddings of up to `samples` of its crops,
taken evenly along the track (not only the first frames: a person who turns shows another
side later). For heads that predict keypoint heatmaps (kae) each crop is weighted by how much
of the body the model sees in it (the mean peak of its keypoint heatmaps, clamped to [0, 1]): a
crop half hidden behind another person or a pillar counts less. Models without heatmaps (an ONNX
export, bnneck) weight every crop alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from keyreid.data.images import read_image
from keyreid.tracking.encoder import KeyreidEncoder, crop_boxes
from keyreid.tracking.mot import MotRows, SequenceInfo

MIN_HEIGHT = 16  # pixels: smaller crops carry too little of the person to embed


@dataclass
class Tracklet:
    camera: str
    track_id: int  # the tracker's id within its camera
    frames: np.ndarray  # int64 [n], sorted
    boxes: np.ndarray  # float32 [n, 4] 0-based xyxy
    embedding: Optional[np.ndarray] = None  # float32 [D], unit
    weight: float = 0.0  # total visibility weight of the sampled crops

    @property
    def start(self) -> int:
        return int(self.frames[0])

    @property
    def end(self) -> int:
        return int(self.frames[-1])


def split_tracklets(camera: str, rows: MotRows, min_length: int = 1) -> list[Tracklet]:
    """One Tracklet per track id of a results file, ordered by id."""
    out = []
    for tid in np.unique(rows.ids):
        sel = rows.ids == tid
        order = np.argsort(rows.frames[sel], kind="stable")
        if sel.sum() >= min_length:
            out.append(Tracklet(camera, int(tid), rows.frames[sel][order], rows.boxes[sel][order]))
    return out


def sample_rows(t: Tracklet, samples: int) -> np.ndarray:
    """Indices of up to `samples` rows spread evenly over the track, skipping tiny boxes
    unless nothing else is left."""
    heights = t.boxes[:, 3] - t.boxes[:, 1]
    usable = np.flatnonzero(heights >= MIN_HEIGHT)
    if not len(usable):
        usable = np.arange(len(t.frames))
    pick = np.unique(np.round(np.linspace(0, len(usable) - 1, min(samples, len(usable)))).astype(int))
    return usable[pick]


def crop_weights(encoder: KeyreidEncoder, crops: list) -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings [N, D], visibility weights [N]) of crops; weights from the keypoint
    heatmaps where the model predicts them, else ones."""
    model = encoder.model
    if not crops:
        return np.zeros((0, encoder.embedding_dim), np.float32), np.zeros(0, np.float32)
    if model.backend.module is None:
        return encoder.embed_crops(crops), np.ones(len(crops), np.float32)
    embs, weights = [], []
    import torch

    for i in range(0, len(crops), encoder.batch_size):
        out = model.forward(model.preprocess(crops[i:i + encoder.batch_size]))
        embs.append(torch.nn.functional.normalize(out.embedding.float(), dim=1).cpu().numpy())
        if out.heatmaps is None:
            weights.append(np.ones(len(out.embedding), np.float32))
        else:
            peaks = out.heatmaps.float().flatten(2).amax(-1).clamp(0, 1)  # [B, K]
            weights.append(peaks.mean(1).cpu().numpy())
    return np.concatenate(embs).astype(np.float32), np.concatenate(weights).astype(np.float32)


def embed_tracklets(info: SequenceInfo, tracklets: list[Tracklet], encoder: KeyreidEncoder,
                    samples: int = 8) -> None:
    """Fill each tracklet's embedding (frames read once each, in order)."""
    wanted: dict[int, list[tuple[int, int]]] = {}  # frame -> (tracklet index, row)
    for ti, t in enumerate(tracklets):
        for r in sample_rows(t, samples):
            wanted.setdefault(int(t.frames[r]), []).append((ti, int(r)))
    crops, owners = [], []
    for f in sorted(wanted):
        image = read_image(info.frame_path(f))
        pairs = wanted[f]
        crops += crop_boxes(image, np.stack([tracklets[ti].boxes[r] for ti, r in pairs]))
        owners += [ti for ti, _ in pairs]
    emb, w = crop_weights(encoder, crops)
    owners = np.asarray(owners, np.int64)
    for ti, t in enumerate(tracklets):
        sel = owners == ti
        ww = np.maximum(w[sel], 1e-3)  # a crop the model sees nothing in still counts a little
        mean = (emb[sel] * ww[:, None]).sum(0)
        t.embedding = (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)
        t.weight = float(w[sel].sum())
