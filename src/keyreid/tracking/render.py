"""Draw tracks on their frames: a contact sheet (PNG) or a video (MP4 through OpenCV's writer).

Each id keeps one colour (from the golden-ratio hue sequence, so neighbouring ids differ) in
every frame and every camera, so a global id can be followed from camera to camera by eye.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from keyreid.data.images import read_image
from keyreid.errors import KeyreidError
from keyreid.tracking.mot import MotRows, SequenceInfo
from keyreid.utils.io import atomic_write

RENDER_KINDS = ("sheet", "video")


def id_colour(track_id: int) -> tuple[int, int, int]:
    h = (int(track_id) * 0.6180339887) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_frame(image: Image.Image, rows: MotRows, sl: slice) -> Image.Image:
    out = image.copy()
    d = ImageDraw.Draw(out)
    for (x1, y1, x2, y2), tid in zip(rows.boxes[sl], rows.ids[sl]):
        c = id_colour(int(tid))
        d.rectangle([x1, y1, x2 - 1, y2 - 1], outline=c, width=2)
        d.rectangle([x1, max(0, y1 - 11), x1 + 6 * len(str(tid)) + 4, max(11, y1)], fill=c)
        d.text((x1 + 2, max(0, y1 - 11)), str(int(tid)), fill=(0, 0, 0))
    return out


def contact_sheet(info: SequenceInfo, rows: MotRows, frames: int = 12, columns: int = 4) -> Image.Image:
    """`frames` frames evenly over the sequence, tracks drawn, in a grid with frame numbers."""
    picks = np.unique(np.round(np.linspace(1, info.length, min(frames, info.length))).astype(int))
    slices = rows.frame_slices(info.length)
    tiles = []
    for f in picks:
        tile = draw_frame(read_image(info.frame_path(int(f))), rows, slices[int(f)])
        ImageDraw.Draw(tile).text((4, 4), f"{info.name} frame {f}", fill=(255, 255, 255))
        tiles.append(tile)
    rows_n = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * info.width, rows_n * info.height), (0, 0, 0))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * info.width, (i // columns) * info.height))
    return sheet


def write_video(path: Path, info: SequenceInfo, rows: MotRows) -> None:
    """Every frame with its tracks, at the sequence's frame rate (MP4, mp4v codec)."""
    import cv2

    slices = rows.frame_slices(info.length)

    # OpenCV picks the container from the file name, so the temporary file ends in .mp4 too
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(info.frame_rate),
                             (info.width, info.height))
    if not writer.isOpened():
        raise KeyreidError(f"{path}: OpenCV cannot write MP4 video here; use --render sheet")
    try:
        for f in range(1, info.length + 1):
            frame = draw_frame(read_image(info.frame_path(f)), rows, slices[f])
            writer.write(np.ascontiguousarray(np.asarray(frame)[:, :, ::-1]))  # OpenCV wants BGR
        writer.release()
        os.replace(tmp, path)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)


def render(kind: str, path: Path, info: SequenceInfo, rows: MotRows) -> Path:
    """Draw `rows` as RENDER_KINDS `kind` at `path` (written atomically)."""
    if kind == "sheet":
        sheet = contact_sheet(info, rows)
        atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))
    else:
        write_video(path, info, rows)
    return path
