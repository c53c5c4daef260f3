"""SQLite sidecar of the faiss index: path, pid, camera, timestamp and track per id.

A saved generation is opened read-only; the first change copies it into memory, and `save_to`
writes the copy to a temporary file that is renamed into place, so the file an older manifest
names is never modified (see faiss_backend.py for the generations). The connection may be used
from any thread (one lock around every statement), e.g. by the HTTP service's workers.
"""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from keyreid.errors import DataError
from keyreid.utils.io import atomic_write

_SCHEMA = ("CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY, path TEXT, pid INTEGER, "
           "camid INTEGER, timestamp REAL, track INTEGER)")
_COLUMNS = ("id", "path", "pid", "camid", "timestamp", "track")


def _locked(method):
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return run


class MetadataStore:
    def __init__(self, path: Optional[Path] = None):
        """`path` None: a new empty in-memory store; else a saved store, opened read-only."""
        self.path = path
        self.lock = threading.RLock()
        if path is None:
            self.conn = sqlite3.connect(":memory:", check_same_thread=False)
            self.conn.execute(_SCHEMA)
            self.writable = True
            return
        if not Path(path).is_file():
            raise DataError(path, "index metadata file is missing")
        try:
            self.conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro&immutable=1", uri=True,
                                        check_same_thread=False)
            self.conn.execute("SELECT COUNT(*) FROM meta").fetchone()
        except sqlite3.DatabaseError as e:
            raise DataError(path, f"index metadata is not a readable SQLite store ({e})") from None
        self.writable = False

    def _writable(self) -> None:
        if not self.writable:
            mem = sqlite3.connect(":memory:", check_same_thread=False)
            self.conn.backup(mem)
            self.conn.close()
            self.conn = mem
            self.writable = True

    @_locked
    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM meta").fetchone()[0]

    @_locked
    def add(self, ids: np.ndarray, metadata: list[dict]) -> None:
        self._writable()
        taken = self.existing(ids)
        if taken:
            from keyreid.search.index import SearchIndexError

            raise SearchIndexError(f"ids already in the index: {sorted(taken)[:5]}")
        with self.conn:
            self.conn.executemany(
                "INSERT INTO meta VALUES (?, ?, ?, ?, ?, ?)",
                [(int(i), m.get("path"), m.get("pid"), m.get("camid"), m.get("timestamp"), m.get("track"))
                 for i, m in zip(ids, metadata)])

    @_locked
    def existing(self, ids: Iterable[int]) -> set[int]:
        ids = [int(i) for i in ids]
        found: set[int] = set()
        for s in range(0, len(ids), 500):
            chunk = ids[s:s + 500]
            q = f"SELECT id FROM meta WHERE id IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self.conn.execute(q, chunk))
        return found

    @_locked
    def delete(self, ids: Iterable[int]) -> None:
        self._writable()
        with self.conn:
            self.conn.executemany("DELETE FROM meta WHERE id = ?", [(int(i),) for i in ids])

    @_locked
    def ids_with_cameras(self, cameras: Iterable[int]) -> np.ndarray:
        cams = [int(c) for c in cameras]
        q = f"SELECT id FROM meta WHERE camid IN ({','.join('?' * len(cams))})"
        return np.array([r[0] for r in self.conn.execute(q, cams)], dtype=np.int64)

    @_locked
    def cameras(self) -> list[int]:
        """The distinct cameras stored (as stored: see GalleryIndex.camera_base)."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT camid FROM meta WHERE camid IS NOT NULL")]

    @_locked
    def rebase_cameras(self, ranges: Iterable[tuple[int, int, int]]) -> None:
        """Add `base` to the cameras of ids first..last, for each (first, last, base), in memory
        (an index from before the camera rule, README "Cameras")."""
        self._writable()
        with self.conn:
            self.conn.executemany("UPDATE meta SET camid = camid + ? WHERE id BETWEEN ? AND ? AND camid IS NOT NULL",
                                  [(int(b), int(lo), int(hi)) for lo, hi, b in ranges if b])

    @_locked
    def get(self, ids: Iterable[int]) -> list[Optional[dict]]:
        ids = [int(i) for i in ids]
        by_id: dict[int, dict] = {}
        for s in range(0, len(ids), 500):
            chunk = ids[s:s + 500]
            q = f"SELECT * FROM meta WHERE id IN ({','.join('?' * len(chunk))})"
            for row in self.conn.execute(q, chunk):
                by_id[row[0]] = dict(zip(_COLUMNS, row))
        return [by_id.get(i) for i in ids]

    @_locked
    def filtered_ids(self, filt) -> np.ndarray:
        """Ids kept by a SearchFilter (same semantics as SearchFilter.keeps)."""
        where, args = [], []
        if filt.cameras is not None:
            where.append(f"camid IN ({','.join('?' * len(filt.cameras))})")
            args += sorted(int(c) for c in filt.cameras)
        if filt.cameras_not is not None:
            where.append(f"(camid IS NULL OR camid NOT IN ({','.join('?' * len(filt.cameras_not))}))")
            args += sorted(int(c) for c in filt.cameras_not)
        if filt.after is not None:
            where.append("timestamp >= ?")
            args.append(float(filt.after))
        if filt.before is not None:
            where.append("timestamp <= ?")
            args.append(float(filt.before))
        q = "SELECT id FROM meta" + (" WHERE " + " AND ".join(where) if where else "")
        return np.array([r[0] for r in self.conn.execute(q, args)], dtype=np.int64)

    @_locked
    def all_ids(self) -> np.ndarray:
        return np.array([r[0] for r in self.conn.execute("SELECT id FROM meta ORDER BY id")], dtype=np.int64)

    @_locked
    def save_to(self, path: Path) -> None:
        def write(tmp: str) -> None:
            target = sqlite3.connect(tmp)
            try:
                self.conn.backup(target)
            except sqlite3.OperationalError as e:
                if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(e):
                    # SQLite's word for a full disk: the OSError atomic_write reports as one line
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp) from None
                raise DataError(path, f"cannot write the index metadata ({e})") from None
            finally:
                target.close()

        atomic_write(path, write)

    @_locked
    def close(self) -> None:
        self.conn.close()


__all__ = ["MetadataStore"]
