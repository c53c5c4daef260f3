"""Atomic file writes: a reader never sees a half-written file, a killed writer loses nothing old."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from keyreid.errors import KeyreidError


class DiskFullError(KeyreidError):
    """No space left while writing a file; whatever was there before is untouched."""


def _file_mode(path: Path) -> int:
    """The mode a plain open() would give a new file (0666 minus the umask); an existing file
    keeps its own. mkstemp alone would leave 0600, unreadable for the user's group."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if free < 1024 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"


def _disk_full(e: BaseException) -> bool:
    """ENOSPC / EDQUOT, also when a library wrapped it: torch.save's zip writer turns the OSError of
    the file's write() into a RuntimeError ("unexpected pos") whose __context__ is the OSError."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it over `path`.
    A full disk is a DiskFullError naming the path and the free space; the old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _disk_full(e):
            kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
            raise DiskFullError(f"{path}: no space left on the device while writing it "
                                f"({_free_space(path.parent)} free in {path.parent}); {kept}; "
                                "free some space and run again") from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    atomic_write(path, write)


class LockedError(KeyreidError):
    """Another process holds a lock we waited for in vain."""


@contextmanager
def file_lock(path: str | Path, wait_s: float, busy: str) -> Iterator[None]:
    """Hold an exclusive fcntl.flock on `path` (created if missing) for the block. The OS drops
    the lock when the holder dies, so a killed writer never leaves the lock stuck. After `wait_s`
    seconds of waiting: LockedError(busy)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(busy) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the flock
