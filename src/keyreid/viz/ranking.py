"""Ranked lists: a few queries, each followed by its top-k gallery images by distance.

Ranking follows the evaluation protocol (keyreid.evaluation.reid): a stable ascending sort of
the query's distance row, with gallery items of the same pid *and* the same camera as the query
dropped by default (junk="exclude"); junk="grey" shows them instead, with a grey border and a
"junk" label, still in their place in the order. A correct match (same pid) has a green border,
a wrong one a red border, the query a blue one.

The picture is composed as one pixel array with a fixed layout (see `grid_layout`) and placed
unscaled into the figure, so each cell's position in the PNG is known exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from keyreid.data.records import camera_label, named_camera
from keyreid.viz.report import save_figure

__all__ = ["RankedItem", "RankedRow", "rank_gallery", "grid_layout", "plot_ranked_lists", "plot_ranked_rows",
           "ranked_summary", "save_ranked", "load_ranked", "select_queries", "plot_saved_ranking",
           "MATCH_RGB", "MISMATCH_RGB", "JUNK_RGB", "QUERY_RGB"]

MATCH_RGB = (0, 190, 0)
MISMATCH_RGB = (220, 0, 0)
JUNK_RGB = (150, 150, 150)
QUERY_RGB = (30, 90, 230)
_BACKGROUND = 255
_LETTERBOX = 235

BORDER = 4      # border width around each image, pixels
PAD = 6         # space between neighbouring cells
QUERY_GAP = 18  # extra space separating the query from its ranked list
LABEL_H = 28    # band above each cell for its two text lines
MARGIN = 6
DPI = 100


@dataclass(frozen=True)
class RankedItem:
    index: int        # gallery index
    distance: float
    match: bool       # same pid as the query
    junk: bool        # same pid and same camera (excluded by the protocol)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def rank_gallery(dist_row, query_pid: int, query_camid: int, gallery_pids, gallery_camids,
                 top_k: int, junk: str = "exclude") -> list[RankedItem]:
    """The query's top-k gallery items by ascending distance (stable: ties keep gallery order).

    junk="exclude" drops same-pid-same-camera items as the protocol does; "grey" keeps them
    marked junk=True (they still take a place in the top k).
    """
    if junk not in ("exclude", "grey"):
        raise ValueError(f"junk must be 'exclude' or 'grey', got {junk!r}")
    d = _np(dist_row).astype(np.float64)
    g_pids, g_cams = _np(gallery_pids), _np(gallery_camids)
    order = np.argsort(d, kind="stable")
    is_junk = (g_pids == query_pid) & (g_cams == query_camid)
    if junk == "exclude":
        order = order[~is_junk[order]]
    return [RankedItem(int(j), float(d[j]), bool(g_pids[j] == query_pid), bool(is_junk[j]))
            for j in order[:top_k]]


@dataclass(frozen=True)
class GridLayout:
    width: int
    height: int
    boxes: dict  # (row, col) -> (x0, y0, x1, y1) of the bordered cell, end-exclusive, PNG pixels
    labels: dict  # (row, col) -> (x centre, y top) of the label band


def grid_layout(rows: int, top_k: int, cell_hw: tuple[int, int] = (128, 64)) -> GridLayout:
    """Pixel layout of the ranked-list picture: column 0 is the query, columns 1..top_k its ranks.

    Boxes include the BORDER-pixel frame; pixel (x, y) of the PNG is row y, column x.
    """
    ch, cw = cell_hw
    bw, bh = cw + 2 * BORDER, ch + 2 * BORDER
    boxes, labels = {}, {}
    for r in range(rows):
        y0 = MARGIN + r * (LABEL_H + bh + PAD) + LABEL_H
        for c in range(top_k + 1):
            x0 = MARGIN + c * (bw + PAD) + (QUERY_GAP if c > 0 else 0)
            boxes[(r, c)] = (x0, y0, x0 + bw, y0 + bh)
            labels[(r, c)] = (x0 + bw / 2, y0 - LABEL_H)
    width = MARGIN * 2 + (top_k + 1) * bw + top_k * PAD + QUERY_GAP
    height = MARGIN * 2 + rows * (LABEL_H + bh) + (rows - 1) * PAD
    return GridLayout(width, height, boxes, labels)


def _open(sample, root: Optional[Path]) -> Image.Image:
    path = Path(sample.path)
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    from keyreid.data.images import read_image

    return read_image(path)


def _placeholder(h: int, w: int) -> np.ndarray:
    # an unreadable image should not sink the whole report: draw a crossed grey box instead
    a = np.full((h, w, 3), 200, dtype=np.uint8)
    for t in np.linspace(0, 1, 2 * max(h, w)):
        a[int(t * (h - 1)), int(t * (w - 1))] = 90
        a[int(t * (h - 1)), int((1 - t) * (w - 1))] = 90
    return a


def _letterbox(img: Image.Image, h: int, w: int) -> np.ndarray:
    """Resize keeping the aspect ratio, centred on a light grey cell of size h x w."""
    scale = min(h / img.height, w / img.width)
    nh, nw = max(1, round(img.height * scale)), max(1, round(img.width * scale))
    small = np.asarray(img.resize((nw, nh), Image.BILINEAR), dtype=np.uint8)
    cell = np.full((h, w, 3), _LETTERBOX, dtype=np.uint8)
    y, x = (h - nh) // 2, (w - nw) // 2
    cell[y:y + nh, x:x + nw] = small
    return cell


def _paste(canvas: np.ndarray, box, picture: np.ndarray, colour, faded: bool = False) -> None:
    x0, y0, x1, y1 = box
    canvas[y0:y1, x0:x1] = colour
    if faded:
        picture = (0.45 * picture + 0.55 * 255).astype(np.uint8)
    canvas[y0 + BORDER:y1 - BORDER, x0 + BORDER:x1 - BORDER] = picture


def _choose_queries(q_pids, q_cams, g_pids, g_cams, num: int, seed: int) -> list[int]:
    # prefer queries with a positive left after junk removal (those the protocol evaluates),
    # then fill up with the others
    valid = np.array([np.any((g_pids == q_pids[i]) & (g_cams != q_cams[i]))
                      for i in range(len(q_pids))], dtype=bool)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for pool in (np.flatnonzero(valid), np.flatnonzero(~valid)):
        take = min(num - len(picked), len(pool))
        if take > 0:
            picked += [int(i) for i in rng.choice(pool, size=take, replace=False)]
    return sorted(picked)


def plot_ranked_lists(query_samples: Sequence, gallery_samples: Sequence, distmat,
                      out_png: str | Path, num_queries: int = 4, top_k: int = 8, seed: int = 0,
                      root: Optional[str | Path] = None, cell_hw: tuple[int, int] = (128, 64),
                      junk: str = "exclude", query_indices: Optional[Sequence[int]] = None,
                      load_image: Optional[Callable[[object], Image.Image]] = None) -> Path:
    """Draw `num_queries` queries (chosen with `seed`, or exactly `query_indices`) and their
    top-k gallery images, one row per query. Random queries are drawn first among those with a
    valid positive (same pid, other camera), then among the rest.

    Samples need .path, .pid and .camid (keyreid.data.records.Sample); images are read from
    .path (relative paths under `root`) unless `load_image(sample)` is given. distmat is
    [num_query, num_gallery] (numpy or torch). Labels: "pid/c2" (the camera as the file name
    writes it, keyreid.data.records.named_camera; README "Cameras") and the distance, "junk" for
    greyed same-camera matches.
    """
    d = _np(distmat)
    if d.shape != (len(query_samples), len(gallery_samples)):
        raise ValueError(f"distmat shape {d.shape} does not match "
                         f"{len(query_samples)} queries x {len(gallery_samples)} gallery samples")
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    q_pids = np.array([s.pid for s in query_samples])
    q_cams = np.array([s.camid for s in query_samples])
    g_pids = np.array([s.pid for s in gallery_samples])
    g_cams = np.array([s.camid for s in gallery_samples])
    if query_indices is None:
        query_indices = _choose_queries(q_pids, q_cams, g_pids, g_cams, num_queries, seed)
    query_indices = [int(i) for i in query_indices]
    if not query_indices:
        raise ValueError("no query to show")

    rows = [RankedRow(query_samples[qi], [(gallery_samples[it.index], it) for it in
                                          rank_gallery(d[qi], query_samples[qi].pid, query_samples[qi].camid,
                                                       g_pids, g_cams, top_k, junk)])
            for qi in query_indices]
    return plot_ranked_rows(rows, out_png, top_k, root=root, cell_hw=cell_hw, load_image=load_image)


@dataclass(frozen=True)
class RankedRow:
    """One row of a ranked-list picture: the query (.path, .pid, .camid), its ranked gallery
    items as (gallery sample, RankedItem), and the first line of the query's label."""

    query: object
    items: list
    title: str = "query"


def plot_ranked_rows(rows: Sequence[RankedRow], out_png: str | Path, top_k: int,
                     root: Optional[str | Path] = None, cell_hw: tuple[int, int] = (128, 64),
                     load_image: Optional[Callable[[object], Image.Image]] = None) -> Path:
    """Draw ranked rows (see plot_ranked_lists for frames, labels and the layout)."""
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("no query to show")
    root_path = Path(root) if root is not None else None
    ch, cw = cell_hw
    cache: dict[int, np.ndarray] = {}

    def picture(sample) -> np.ndarray:
        key = id(sample)
        if key not in cache:
            try:
                img = load_image(sample) if load_image is not None else _open(sample, root_path)
                cache[key] = _letterbox(img.convert("RGB"), ch, cw)
            except (OSError, ValueError):
                cache[key] = _placeholder(ch, cw)
        return cache[key]

    layout = grid_layout(len(rows), top_k, cell_hw)
    canvas = np.full((layout.height, layout.width, 3), _BACKGROUND, dtype=np.uint8)
    texts = []
    for r, row in enumerate(rows):
        q = row.query
        _paste(canvas, layout.boxes[(r, 0)], picture(q), QUERY_RGB)
        texts.append((layout.labels[(r, 0)], f"{row.title}\n{q.pid}/{camera_label(named_camera(q))}", "black"))
        for c, (g, item) in enumerate(row.items[:top_k], start=1):
            colour = JUNK_RGB if item.junk else MATCH_RGB if item.match else MISMATCH_RGB
            _paste(canvas, layout.boxes[(r, c)], picture(g), colour, faded=item.junk)
            tag = "junk" if item.junk else f"#{c}"
            texts.append((layout.labels[(r, c)], f"{tag} {item.distance:.3g}\n{g.pid}/{camera_label(named_camera(g))}",
                          "0.45" if item.junk else "black"))

    # the figure is exactly the canvas size and figimage places it unscaled at the origin
    fig = Figure(figsize=(layout.width / DPI, layout.height / DPI), dpi=DPI)
    fig.figimage(canvas, xo=0, yo=0, origin="upper", resize=False)
    for (x, y), text, colour in texts:
        fig.text(x / layout.width, 1 - (y + 2) / layout.height, text, ha="center", va="top",
                 fontsize=6.5, color=colour, linespacing=1.1)
    return save_figure(fig, out_png, dpi=DPI)


# ------------------------------------------------------------------ an evaluation run's rankings
RANKED_FORMAT = "keyreid-ranked"


def ranked_summary(distmat, q_pids, q_camids, g_pids, g_camids, top_k: int = 50) -> dict:
    """Per query, by the re-ID protocol (stable ascending order, same-pid-same-camera items
    dropped): the top-k gallery indices and distances (-1 / NaN past the end), the 1-based rank
    of the first true match (0: none) and the AP (NaN: no true match, a query the protocol skips).
    Small enough to keep beside an evaluation report where the full matrix (Q x G floats) is not."""
    d = _np(distmat)
    qp, qc, gp, gc = (np.asarray(a) for a in (q_pids, q_camids, g_pids, g_camids))
    nq = d.shape[0]
    k = min(top_k, d.shape[1])
    index = np.full((nq, k), -1, np.int64)
    dist = np.full((nq, k), np.nan, np.float32)
    first = np.zeros(nq, np.int64)
    ap = np.full(nq, np.nan, np.float64)
    for i in range(nq):
        order = np.argsort(d[i], kind="stable")
        order = order[~((gp[order] == qp[i]) & (gc[order] == qc[i]))]
        index[i, :min(k, len(order))] = order[:k]
        dist[i, :min(k, len(order))] = d[i, order[:k]]
        hits = np.flatnonzero(gp[order] == qp[i]) + 1   # 1-based ranks of the true matches
        if len(hits):
            first[i] = hits[0]
            ap[i] = float(np.mean(np.arange(1, len(hits) + 1) / hits))
    return {"index": index, "distance": dist, "first_hit": first, "ap": ap}


def save_ranked(path: str | Path, distmat, query: Sequence, gallery: Sequence,
                root: Optional[str] = None, top_k: int = 50) -> Path:
    """Write ranked_summary and the samples' path / pid / camera to `path` (.npz), atomically."""
    from keyreid.utils.io import atomic_write

    summary = ranked_summary(distmat, [s.pid for s in query], [s.camid for s in query],
                             [s.pid for s in gallery], [s.camid for s in gallery], top_k)
    arrays = {"top_index": summary["index"], "top_distance": summary["distance"],
              "first_hit": summary["first_hit"], "ap": summary["ap"]}
    for name, samples in (("query", query), ("gallery", gallery)):
        # absolute: the picture can be drawn from another working directory
        arrays[f"{name}_path"] = np.array([os.path.abspath(str(s.path)) for s in samples])
        arrays[f"{name}_pid"] = np.array([s.pid for s in samples], np.int64)
        arrays[f"{name}_camid"] = np.array([s.camid for s in samples], np.int64)
        # the labels' cameras, as the file names write them (NaN: none), README "Cameras"
        arrays[f"{name}_camera"] = np.array([np.nan if named_camera(s) is None else named_camera(s)
                                             for s in samples], np.float64)
    arrays["format"] = np.array(RANKED_FORMAT)
    arrays["root"] = np.array(str(root or ""))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    path = Path(path)
    atomic_write(path, write)
    return path


def load_ranked(path: str | Path) -> dict:
    """The arrays save_ranked wrote; a missing or foreign file is one clear error."""
    from keyreid.errors import KeyreidError

    path = Path(path)
    if not path.is_file():
        raise KeyreidError(f"{path}: ranked lists not found; run `keyreid eval` again (it writes them "
                           "beside the report for re-ID datasets)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise KeyreidError(f"{path}: not readable ({e})") from None
    if str(data.get("format", "")) != RANKED_FORMAT:
        raise KeyreidError(f"{path}: not a keyreid ranked-lists file")
    return data


def select_queries(ap: np.ndarray, first_hit: np.ndarray, worst: int = 0, best: int = 0,
                   chosen: Sequence[int] = ()) -> list[tuple[int, str]]:
    """(query index, label) rows: the `worst` lowest-AP and `best` highest-AP queries among those
    the protocol evaluates (a true match exists), ties broken by the rank of the first true match
    then the index, then the `chosen` indices in the order given."""
    ap = np.asarray(ap, np.float64)
    first_hit = np.asarray(first_hit)
    valid = np.flatnonzero(~np.isnan(ap))
    ascending = valid[np.lexsort((valid, -first_hit[valid], ap[valid]))]
    descending = valid[np.lexsort((valid, first_hit[valid], -ap[valid]))]
    rows = [(int(i), f"worst AP {ap[i]:.2f}") for i in ascending[:worst]]
    rows += [(int(i), f"best AP {ap[i]:.2f}") for i in descending[:best]]
    rows += [(int(i), "no true match" if np.isnan(ap[i]) else f"AP {ap[i]:.2f}") for i in chosen]
    return rows


@dataclass(frozen=True)
class _Item:
    path: str
    pid: int
    camid: int
    camera: Optional[int] = None
    meta: dict = field(default_factory=dict)


def plot_saved_ranking(data: dict, rows: Sequence[tuple[int, str]], out_png: str | Path,
                       top_k: int = 10, cell_hw: tuple[int, int] = (128, 64)) -> Path:
    """Draw `rows` (from select_queries) of a saved ranking (load_ranked's arrays)."""
    def item(name: str, i: int) -> _Item:
        camera, meta = None, {}   # a file from before the camera rule has none: camid is shown
        if f"{name}_camera" in data:
            value = float(data[f"{name}_camera"][i])
            camera, meta = (None, {"camera_known": False}) if np.isnan(value) else (int(value), {})
        return _Item(str(data[f"{name}_path"][i]), int(data[f"{name}_pid"][i]), int(data[f"{name}_camid"][i]),
                     camera, meta)

    ranked_rows = []
    for qi, label in rows:
        q = item("query", qi)
        items = [(item("gallery", int(j)), RankedItem(int(j), float(dist), int(data["gallery_pid"][j]) == q.pid,
                                                     False))
                 for j, dist in zip(data["top_index"][qi], data["top_distance"][qi]) if j >= 0]
        ranked_rows.append(RankedRow(q, items, label))
    top_k = max(1, min(top_k, data["top_index"].shape[1]))
    return plot_ranked_rows(ranked_rows, out_png, top_k, cell_hw=cell_hw)
