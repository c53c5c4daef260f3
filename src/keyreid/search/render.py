"""`keyreid search --render`: each query followed by its hits, one row per query.

Frames: green / red for a hit of the same / another identity when both identities are known,
neutral grey otherwise (an unlabelled gallery is the normal case); the query is blue. Labels
"pid/c2": the camera as the hit's file name writes it (README "Cameras"). Built from the
ranked-list pieces of keyreid.viz.ranking so both pictures look alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from keyreid.data.records import camera_label
from keyreid.viz.ranking import (DPI, MATCH_RGB, MISMATCH_RGB, QUERY_RGB, _letterbox, _paste, _placeholder,
                                 grid_layout)
from keyreid.viz.report import save_figure

UNKNOWN_RGB = (110, 110, 110)


def frame_colour(query_pid: Optional[int], hit_pid: Optional[int]) -> tuple[int, int, int]:
    if query_pid is None or hit_pid is None:
        return UNKNOWN_RGB
    return MATCH_RGB if query_pid == hit_pid else MISMATCH_RGB


def _picture(path: str, h: int, w: int) -> np.ndarray:
    from keyreid.data.images import read_image
    from keyreid.errors import ImageError

    try:
        return _letterbox(read_image(path), h, w)
    except ImageError:  # a gallery file moved (or grew into a bomb) since extraction: a crossed box
        return _placeholder(h, w)


def render_hits(queries: Sequence[str], query_pids: Sequence[Optional[int]], hits: Sequence[Sequence],
                out_png: str | Path, cell_hw: tuple[int, int] = (128, 64)) -> Path:
    from matplotlib.figure import Figure

    top_k = max([len(h) for h in hits] + [1])
    layout = grid_layout(len(queries), top_k, cell_hw)
    canvas = np.full((layout.height, layout.width, 3), 255, dtype=np.uint8)
    texts = []
    ch, cw = cell_hw
    for r, (qpath, qpid, row) in enumerate(zip(queries, query_pids, hits)):
        _paste(canvas, layout.boxes[(r, 0)], _picture(qpath, ch, cw), QUERY_RGB)
        texts.append((layout.labels[(r, 0)], f"query\n{'' if qpid is None else qpid}"))
        for c, hit in enumerate(row, start=1):
            _paste(canvas, layout.boxes[(r, c)], _picture(hit.path, ch, cw), frame_colour(qpid, hit.pid))
            who = f"{'' if hit.pid is None else hit.pid}{'' if hit.camid is None else '/' + camera_label(hit.camid)}"
            texts.append((layout.labels[(r, c)], f"#{c} {hit.score:.3f}\n{who or f'id {hit.id}'}"))
    fig = Figure(figsize=(layout.width / DPI, layout.height / DPI), dpi=DPI)
    fig.figimage(canvas, xo=0, yo=0, origin="upper", resize=False)
    for (x, y), text in texts:
        fig.text(x / layout.width, 1 - (y + 2) / layout.height, text, ha="center", va="top", fontsize=6.5,
                 linespacing=1.1)
    return save_figure(fig, out_png, dpi=DPI)


__all__ = ["UNKNOWN_RGB", "frame_colour", "render_hits"]
