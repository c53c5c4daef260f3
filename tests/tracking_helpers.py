"""Small hand-made MOTChallenge sequences for the tracking tests: coloured people on grey,
boxes known exactly, so every metric can be computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {1: (220, 30, 30), 2: (30, 30, 220), 3: (30, 180, 40)}


def seqinfo(name: str, length: int, width: int, height: int) -> str:
    return (f"[Sequence]\nname={name}\nimDir=img1\nframeRate=10\nseqLength={length}\nimWidth={width}\n"
            f"imHeight={height}\nimExt=.jpg\n")


def write_sequence(root: Path, name: str, tracks: dict, length: int, width: int = 160, height: int = 90,
                   hidden: dict | None = None) -> Path:
    """tracks: pid -> function frame -> left x (0-based) of a 20x60 person at y 20, or None when
    absent. hidden: pid -> frames where the person is drawn behind a grey pillar and has no
    detection. Writes img1/, det/det.txt (conf 0.9) and gt/gt.txt (MOT 1-based boxes)."""
    seq = root / name
    (seq / "img1").mkdir(parents=True)
    (seq / "det").mkdir()
    (seq / "gt").mkdir()
    (seq / "seqinfo.ini").write_text(seqinfo(name, length, width, height))
    hidden = hidden or {}
    gt, det = [], []
    for f in range(1, length + 1):
        im = Image.new("RGB", (width, height), (120, 120, 120))
        d = ImageDraw.Draw(im)
        for pid, x_of in tracks.items():
            x = x_of(f)
            if x is None:
                continue
            d.rectangle([x, 20, x + 19, 79], fill=COLOURS[pid])
            d.rectangle([x + 5, 10, x + 14, 19], fill=(230, 180, 140))
            gt.append(f"{f},{pid},{x + 1},11,20,70,1,1,1.0")
            if f not in hidden.get(pid, ()):
                det.append(f"{f},-1,{x + 1},11,20,70,0.9,-1,-1,-1")
        im.save(seq / "img1" / f"{f:06d}.jpg", quality=95)
    (seq / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
    (seq / "det" / "det.txt").write_text("\n".join(det) + "\n")
    return seq


def two_walkers(root: Path, name: str = "c1", length: int = 30) -> Path:
    """A red person walking right and a blue one walking left, never overlapping."""
    return write_sequence(root, name, {1: lambda f: 5 + 2 * f, 2: lambda f: 170 - 2 * f}, length,
                          width=200)


def read_rows(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", ndmin=2)
