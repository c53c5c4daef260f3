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


class ImageTooLarge(DataError):
    """An image whose pixel count passes the reader's limit (a decompression bomb). Never skipped
    by `--on-error skip`: decoding it could exhaust memory, and the user must know it is there."""
