"""Markdown reports with relative image links, and atomic file output shared by the plots."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence
from urllib.parse import quote

from keyreid.utils.io import atomic_write, atomic_write_text

__all__ = ["write_markdown_report", "markdown_table", "save_figure", "relative_link"]


FIGURE_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".pdf": "pdf", ".svg": "svg"}


def figure_format(path: str | Path) -> str:
    """The file format a figure is written in, from its suffix (a .jpg holds JPEG bytes)."""
    fmt = FIGURE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        from keyreid.errors import KeyreidError

        raise KeyreidError(f"{path}: cannot tell the picture format from the name; end it with "
                           f"{', '.join(FIGURE_FORMATS)}")
    return fmt


def save_figure(fig, out_png: str | Path, dpi: float = 100) -> Path:
    """Render a matplotlib Figure with the Agg canvas, atomically (temp + rename), in the format
    its suffix names (PNG, JPEG, PDF, SVG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out_png = Path(out_png)
    fmt = figure_format(out_png)
    FigureCanvasAgg(fig)  # attaches itself to fig; no pyplot, no display
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    return out_png


def relative_link(target: str | Path, report_dir: str | Path) -> str:
    """URL-quoted posix path of `target` relative to the folder of the report."""
    rel = os.path.relpath(Path(target).absolute(), Path(report_dir).absolute())
    return quote(Path(rel).as_posix(), safe="/._-~")


def _cell(value, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else format(value, floatfmt)
    elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return _cell(value.item(), floatfmt)
    else:
        text = str(value)
    # a pipe would end the cell and a newline the row
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


_ALIGN = {"l": ":---", "r": "---:", "c": ":---:", None: "---", "": "---"}


def markdown_table(headers: Sequence, rows: Iterable[Sequence], floatfmt: str = ".4g",
                   align: Optional[Sequence[Optional[str]]] = None) -> str:
    """A GitHub-flavoured Markdown table, one line per row, ending with a newline.

    floats are formatted with `floatfmt`, None becomes an empty cell, pipes are escaped.
    align: per column "l", "r", "c" or None (default: no alignment marker).
    """
    headers = list(headers)
    n = len(headers)
    if n == 0:
        raise ValueError("markdown_table needs at least one column")
    if align is None:
        align = [None] * n
    if len(align) != n:
        raise ValueError(f"align has {len(align)} entries for {n} columns")
    lines = ["| " + " | ".join(_cell(h, floatfmt) for h in headers) + " |",
             "| " + " | ".join(_ALIGN[a] for a in align) + " |"]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != n:
            raise ValueError(f"row {i} has {len(row)} cells, expected {n}")
        lines.append("| " + " | ".join(_cell(c, floatfmt) for c in row) + " |")
    return "\n".join(lines) + "\n"


def write_markdown_report(path: str | Path, title: str,
                          sections: Sequence[tuple]) -> Path:
    """Write a Markdown report atomically and return its path.

    sections: (heading, markdown text) or (heading, markdown text, image paths); image paths are
    linked relative to the report's folder, so the report folder can be moved or published as a
    whole. Images are linked whether or not they exist yet (a plot may be written later).
    """
    path = Path(path)
    out = [f"# {title.strip()}", ""]
    for i, section in enumerate(sections):
        if len(section) == 2:
            heading, text = section
            images = None
        elif len(section) == 3:
            heading, text, images = section
        else:
            raise ValueError(f"section {i} must be (heading, text[, images]), got {len(section)} items")
        out += [f"## {str(heading).strip()}", ""]
        if text and str(text).strip():
            out += [str(text).strip("\n"), ""]
        for img in images or ():
            img = Path(img)
            alt = img.stem.replace("_", " ").replace("[", "(").replace("]", ")")
            out += [f"![{alt}]({relative_link(img, path.parent)})", ""]
    atomic_write_text(path, "\n".join(out).rstrip("\n") + "\n")
    return path
