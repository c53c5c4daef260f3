"""MOTChallenge files: `seqinfo.ini`, `det/det.txt`, `gt/gt.txt` and tracker results.

Rows are `frame, id, bb_left, bb_top, bb_width, bb_height, conf, ...` with 1-based frames and
MOTChallenge's 1-based pixel convention (the image's top-left pixel is (1, 1)). Inside keyreid a
box is 0-based `x1, y1, x2, y2` (keyreid's pixel convention everywhere else), so reading
subtracts 1 from left/top and writing adds it back.

Files are parsed with numpy's C reader in one call (100k boxes in well under a second); only
when that fails is the file walked line by line, to name the first bad line. Boxes of zero
size or wholly outside the frame are skipped and boxes that cross the frame's edge are clipped;
both are counted, so a command can say how many.
"""

from __future__ import annotations

import configparser
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from keyreid.errors import DataError
from keyreid.utils.io import atomic_write

SEQINFO_KEYS = ("name", "imDir", "frameRate", "seqLength", "imWidth", "imHeight", "imExt")
MIN_COLUMNS = {"det": 7, "gt": 6, "results": 6}  # det needs its confidence column


@dataclass(frozen=True)
class SequenceInfo:
    """One camera's sequence as `seqinfo.ini` describes it."""

    root: Path
    name: str
    im_dir: str
    frame_rate: float
    length: int
    width: int
    height: int
    im_ext: str

    def frame_path(self, frame: int) -> Path:
        return self.root / self.im_dir / f"{frame:06d}{self.im_ext}"

    def check_frames(self) -> None:
        """Every frame 1..length is present in the image folder (one listing, no stat per frame)."""
        folder = self.root / self.im_dir
        if not folder.is_dir():
            raise DataError(folder, "image folder of the sequence is missing (seqinfo.ini imDir)")
        present = set(os.listdir(folder))
        missing = [f for f in range(1, self.length + 1) if f"{f:06d}{self.im_ext}" not in present]
        if missing:
            raise DataError(folder, f"{len(missing)} of {self.length} frames are missing "
                                    f"(first: {missing[0]:06d}{self.im_ext}); seqinfo.ini says seqLength="
                                    f"{self.length}")


def read_seqinfo(seq_dir: str | Path) -> SequenceInfo:
    """Parse `SEQ/seqinfo.ini`; a missing file or key is one line naming it."""
    root = Path(seq_dir)
    path = root / "seqinfo.ini"
    if not path.is_file():
        raise DataError(root, "not a MOTChallenge sequence: it has no seqinfo.ini")
    parser = configparser.ConfigParser()
    parser.optionxform = str  # keys are camelCase
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as e:
        raise DataError(path, f"unreadable ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if "Sequence" not in parser:
        raise DataError(path, "has no [Sequence] section")
    sec = parser["Sequence"]
    missing = [k for k in SEQINFO_KEYS if k not in sec]
    if missing:
        raise DataError(path, f"[Sequence] lacks {', '.join(missing)}")

    def number(key: str, kind=int, low: float = 1):
        try:
            v = kind(sec[key])
        except ValueError:
            raise DataError(path, f"{key}={sec[key]!r} is not a number") from None
        if not v >= low:
            raise DataError(path, f"{key}={sec[key]} must be at least {low}")
        return v

    ext = sec["imExt"] if sec["imExt"].startswith(".") else "." + sec["imExt"]
    return SequenceInfo(root, sec["name"], sec["imDir"], number("frameRate", float, 1e-6),
                        number("seqLength"), number("imWidth"), number("imHeight"), ext)


def find_sequences(path: str | Path) -> list[SequenceInfo]:
    """A sequence folder (has seqinfo.ini), or a folder whose subfolders are sequences."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "no such folder")
    if (path / "seqinfo.ini").is_file():
        return [read_seqinfo(path)]
    subs = [p for p in sorted(path.iterdir()) if p.is_dir()]
    for p in subs:  # a camera folder without its seqinfo.ini (a stopped copy or render) is not skipped
        if not (p / "seqinfo.ini").is_file() and any((p / d).is_dir() for d in ("img1", "det", "gt")):
            raise DataError(p, "looks like a sequence (img1/, det/ or gt/) but has no seqinfo.ini: an unfinished "
                               "copy or render? Tracking the other cameras alone would miss it")
    seqs = [read_seqinfo(p) for p in subs if (p / "seqinfo.ini").is_file()]
    if not seqs:
        raise DataError(path, "holds no MOTChallenge sequence (a folder with seqinfo.ini, or folders of them)")
    return seqs


@dataclass
class MotRows:
    """Rows of one MOT file, columns as arrays; boxes 0-based xyxy."""

    frames: np.ndarray  # int64 [N], 1-based
    ids: np.ndarray  # int64 [N] (-1 for detections)
    boxes: np.ndarray  # float32 [N, 4] x1, y1, x2, y2
    scores: np.ndarray  # float32 [N]: det confidence, gt flag, tracker score
    visibility: np.ndarray  # float32 [N]: gt's 9th column, 1 where absent
    skipped: dict = field(default_factory=dict)  # reason -> count
    clipped: int = 0

    def __len__(self) -> int:
        return len(self.frames)

    def frame_slices(self, length: int) -> list[slice]:
        """slices[f] = rows of frame f (rows sorted by frame); index 0 unused."""
        starts = np.searchsorted(self.frames, np.arange(length + 2))
        return [slice(int(starts[f]), int(starts[f + 1])) for f in range(length + 1)]


def _first_bad_line(path: Path, min_cols: int) -> tuple[int, str]:
    """(1-based line number, problem) of the first line numpy could not parse."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for no, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            cells = [c.strip() for c in text.split(",")]
            if len(cells) < min_cols:
                return no, f"expected at least {min_cols} comma-separated numbers, got {len(cells)}: {text[:60]!r}"
            for c in cells:
                try:
                    float(c)
                except ValueError:
                    return no, f"{c[:30]!r} is not a number"
    return 0, "rows have different numbers of columns"


def _line_of_row(path: Path, row: int) -> int:
    """Line number of the row-th non-blank line (numpy skips blank lines)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        seen = -1
        for no, line in enumerate(f, 1):
            if line.strip():
                seen += 1
                if seen == row:
                    return no
    return row + 1


def read_mot(path: str | Path, kind: str, info: Optional[SequenceInfo] = None) -> MotRows:
    """Read a det / gt / results file; with `info`, frames are checked against seqLength and
    boxes clipped to the frame. Rows come back sorted by frame (stable)."""
    path = Path(path)
    min_cols = MIN_COLUMNS[kind]
    if not path.is_file():
        raise DataError(path, "missing" + (" (a sequence needs its detections: MOTChallenge rows from your "
                                           "detector in det/det.txt)" if kind == "det" else ""))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": an empty file is fine
            table = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except (ValueError, UnicodeDecodeError):
        no, problem = _first_bad_line(path, min_cols)
        raise DataError(path, f"line {no}: {problem}" if no else problem) from None
    if table.size == 0:
        table = np.zeros((0, min_cols))
    if table.shape[1] < min_cols:
        no, problem = _first_bad_line(path, min_cols)
        raise DataError(path, f"line {no}: {problem}")
    bad = ~np.isfinite(table[:, :min_cols]).all(axis=1)
    frames = table[:, 0]
    bad |= (frames < 1) | (frames != np.round(frames))
    if info is not None:
        bad |= frames > info.length
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        f = table[row, 0]
        why = ("a value is not finite" if not np.isfinite(table[row, :min_cols]).all() else
               f"frame {f:g} is not a frame number from 1" + (f" to {info.length} (seqinfo.ini seqLength)"
                                                               if info is not None else ""))
        raise DataError(path, f"line {_line_of_row(path, row)}: {why}")
    order = np.argsort(frames, kind="stable")
    table = table[order]
    x1, y1 = table[:, 2] - 1.0, table[:, 3] - 1.0
    w, h = table[:, 4], table[:, 5]
    boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=1)
    keep = (w > 0) & (h > 0)
    skipped = {"zero or negative size": int((~keep).sum())}
    clipped = 0
    if info is not None:
        inside = np.clip(boxes, 0, [info.width, info.height, info.width, info.height])
        area = (inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])
        outside = keep & (area < 1.0)  # less than one pixel left in the frame
        skipped["outside the frame"] = int(outside.sum())
        keep &= ~outside
        clipped = int((keep & (np.abs(inside - boxes) > 1e-6).any(axis=1)).sum())
        boxes = inside
    vis = table[:, 8] if table.shape[1] > 8 and kind == "gt" else np.ones(len(table))
    score = table[:, 6] if table.shape[1] > 6 else np.ones(len(table))
    return MotRows(table[keep, 0].astype(np.int64), table[keep, 1].astype(np.int64),
                   boxes[keep].astype(np.float32), score[keep].astype(np.float32),
                   vis[keep].astype(np.float32), {k: v for k, v in skipped.items() if v}, clipped)


def format_mot(frames: np.ndarray, ids: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> str:
    """MOTChallenge result rows (`frame,id,left,top,w,h,conf,-1,-1,-1`) from 0-based xyxy boxes."""
    if not len(frames):
        return ""
    b = np.asarray(boxes, np.float64)
    cols = np.column_stack([frames, ids, b[:, 0] + 1, b[:, 1] + 1, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1], scores])
    lines = [f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{r[6]:.4f},-1,-1,-1"
             for r in cols]
    return "\n".join(lines) + "\n"


def write_mot(path: str | Path, frames, ids, boxes, scores) -> None:
    """Write result rows atomically: a killed writer leaves the old file or none, never half of one."""
    text = format_mot(np.asarray(frames), np.asarray(ids), np.asarray(boxes), np.asarray(scores))
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
