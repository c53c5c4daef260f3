"""Errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path


class KeyreidError(Exception):
    """Base class of every error keyreid raises on purpose."""


class DataError(KeyreidError):
    """Bad input data: a wrong layout, an unreadable image, a malformed record."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ImageError(DataError):
    """An image that cannot be used, raised as one line even from a DataLoader worker.

    torch re-raises a worker's exception in the main process as `type(e)(text)`, where `text`
    is "Caught ... in DataLoader worker ...\nOriginal Traceback ...\n<module>.<Class>: <path>:
    <problem>". A one-argument call therefore keeps only that last line, so the user sees the
    file and the problem, not two tracebacks.
    """

    def __init__(self, path, problem: str | None = None):
        if problem is None:  # rebuilt from a worker's formatted traceback
            lines = [ln for ln in str(path).splitlines() if ln.strip()]
            last = lines[-1] if lines else str(path)
            head, sep, rest = last.partition(f"{type(self).__name__}: ")
            super().__init__(None, rest if sep else last)
        else:
            super().__init__(path, problem)


class ImageTooLarge(ImageError):
    """An image whose pixel count passes the reader's limit (a decompression bomb). Never skipped
    by `--on-error skip`: decoding it could exhaust memory, and the user must know it is there."""
