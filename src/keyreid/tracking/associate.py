"""Across cameras: link tracklets into global identities.

Average-linkage agglomerative clustering of the tracklets' unit embeddings (cosine distance),
merging the closest pair of clusters until the closest allowed pair is farther than
`threshold`, under one cannot-link rule: a camera cannot hold the same person twice at one time,
so two tracklets of one camera whose frame ranges overlap never share a cluster (nor do the
clusters that hold them). By default no two tracklets of one camera share a cluster at all: the
tracker has already decided within a camera, and re-joining its fragments by appearance cost 1 to
3 IDF1 points on the synthetic video (bench/RESULTS.md); `same_camera=True` allows it (a person
who leaves the view and comes back is then one identity again). Nothing assumes a camera layout:
overlapping fields of view (the same person in two cameras at once) are allowed.

The threshold needs no labels by default ("auto"): the cannot-link pairs are pairs of different
people the video itself proves different, so the distances between them show how far apart two
people are for this model on this footage; "auto" links below a low quantile (AUTO_QUANTILE) of
them. With fewer than AUTO_MIN_PAIRS such pairs it falls back to FALLBACK_THRESHOLD.

Constrained average linkage is the classic multi-camera tracklet grouping (e.g. the hierarchical
clustering stage of MTMC trackers such as DeepCC / TRACTA); scipy's linkage has no cannot-link
constraints, so the loop is written here, O(N^2) per merge on numpy arrays.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from keyreid.tracking.tracklets import Tracklet
from keyreid.utils.io import atomic_write_text


def cannot_link(tracklets: Sequence[Tracklet]) -> np.ndarray:
    """bool [N, N]: True for two tracklets of one camera whose frame ranges overlap."""
    cams = np.array([t.camera for t in tracklets])
    start = np.array([t.start for t in tracklets])
    end = np.array([t.end for t in tracklets])
    same = cams[:, None] == cams[None, :]
    overlap = (start[:, None] <= end[None, :]) & (start[None, :] <= end[:, None])
    c = same & overlap
    np.fill_diagonal(c, False)
    return c


AUTO_QUANTILE = 0.05
AUTO_MIN_PAIRS = 10
FALLBACK_THRESHOLD = 0.5


def auto_threshold(tracklets: Sequence[Tracklet]) -> float:
    """AUTO_QUANTILE of the cosine distances between tracklets that cannot be one person."""
    if len(tracklets) < 2:
        return FALLBACK_THRESHOLD
    emb = np.stack([t.embedding for t in tracklets]).astype(np.float64)
    pairs = np.triu(cannot_link(tracklets), 1)
    if pairs.sum() < AUTO_MIN_PAIRS:
        return FALLBACK_THRESHOLD
    return float(np.quantile((1.0 - emb @ emb.T)[pairs], AUTO_QUANTILE))


def link_tracklets(tracklets: Sequence[Tracklet], threshold: float | str = "auto",
                   same_camera: bool = False) -> np.ndarray:
    """int64 [N] global identity labels 1..G (numbered by each identity's first tracklet);
    `same_camera`: tracklets of one camera that follow each other in time may be one person."""
    n = len(tracklets)
    if n == 0:
        return np.zeros(0, np.int64)
    if threshold == "auto":
        threshold = auto_threshold(tracklets)
    emb = np.stack([t.embedding for t in tracklets]).astype(np.float64)
    sums = 1.0 - emb @ emb.T  # sum of pairwise distances between two clusters' members
    counts = np.ones(n)
    blocked = cannot_link(tracklets)
    if not same_camera:
        cams = np.array([t.camera for t in tracklets])
        blocked = cams[:, None] == cams[None, :]
    alive = np.ones(n, bool)
    members = [[i] for i in range(n)]
    while True:
        avg = sums / np.outer(counts, counts)
        invalid = blocked | ~alive[:, None] | ~alive[None, :] | np.eye(n, dtype=bool)
        avg[invalid] = np.inf
        flat = int(np.argmin(avg))
        a, b = divmod(flat, n)
        if not np.isfinite(avg[a, b]) or avg[a, b] > threshold:
            break
        a, b = min(a, b), max(a, b)  # keep the lower index: labels stay in first-tracklet order
        sums[a, :] += sums[b, :]
        sums[:, a] += sums[:, b]
        counts[a] += counts[b]
        blocked[a, :] |= blocked[b, :]
        blocked[:, a] |= blocked[:, b]
        alive[b] = False
        members[a] += members[b]
        members[b] = []
    labels = np.zeros(n, np.int64)
    roots = sorted((min(m), m) for m in members if m)
    for label, (_, m) in enumerate(roots, 1):
        labels[m] = label
    return labels


def identities_table(tracklets: Sequence[Tracklet], labels: np.ndarray) -> str:
    """CSV: global_id, camera, track_id, first_frame, last_frame, boxes (sorted by id, camera)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["global_id", "camera", "track_id", "first_frame", "last_frame", "boxes"])
    for label, t in sorted(zip(labels.tolist(), tracklets), key=lambda p: (p[0], p[1].camera, p[1].start)):
        w.writerow([label, t.camera, t.track_id, t.start, t.end, len(t.frames)])
    return buf.getvalue()


def write_identities(path: Path, tracklets: Sequence[Tracklet], labels: np.ndarray) -> None:
    atomic_write_text(path, identities_table(tracklets, labels))


def associate_sequences(sequences, results: dict, encoder, out_dir: Path, threshold: float | str = "auto",
                        samples: int = 8, same_camera: bool = False) -> tuple[list[Tracklet], np.ndarray, float]:
    """Link the tracks of every sequence (results[name]: its MOT file) into global identities;
    writes OUT/global/<sequence>.txt (MOT rows, global ids) and OUT/identities.csv."""
    from keyreid.tracking.mot import read_mot, write_mot
    from keyreid.tracking.tracklets import embed_tracklets, split_tracklets

    tracklets: list[Tracklet] = []
    rows_of = {}
    for info in sequences:
        rows = read_mot(results[info.name], "results", info)
        rows_of[info.name] = rows
        mine = split_tracklets(info.name, rows)
        embed_tracklets(info, mine, encoder, samples)
        tracklets += mine
    if threshold == "auto":
        threshold = auto_threshold(tracklets)
    labels = link_tracklets(tracklets, threshold, same_camera)
    for info in sequences:
        rows = rows_of[info.name]
        mapping = {t.track_id: label for t, label in zip(tracklets, labels) if t.camera == info.name}
        ids = np.array([mapping[i] for i in rows.ids.tolist()], np.int64)
        write_mot(out_dir / "global" / f"{info.name}.txt", rows.frames, ids, rows.boxes, rows.scores)
    write_identities(out_dir / "identities.csv", tracklets, labels)
    return tracklets, labels, float(threshold)
