"""Run logs: a CSV file per table (append-friendly, survives resume) and TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from keyreid.utils.io import atomic_write


class CSVLog:
    """Rows of dicts appended to a CSV; columns fixed by the first row written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fields: Optional[list[str]] = None
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                self.fields = next(csv.reader(f), None)

    def write(self, row: dict) -> None:
        if self.fields is not None and set(row) - set(self.fields):
            # a column that first appears now (validation runs every N epochs): widen the file
            rows = self.read()
            self.fields = self.fields + [k for k in row if k not in self.fields]
            self._rewrite(rows)
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def _rewrite(self, rows: list[dict]) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.fields)
                w.writeheader()
                w.writerows(rows)

        atomic_write(self.path, write)

    def truncate_after(self, key: str, value: float) -> None:
        """Drop rows with row[key] > value (a resumed run rewrites what came after its checkpoint)."""
        if not self.path.exists() or self.fields is None:
            return
        self._rewrite([r for r in self.read() if float(r[key]) <= value])

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


class TensorBoard:
    """TensorBoard scalars when the tensorboard package is installed; a no-op otherwise."""

    def __init__(self, log_dir: str | Path, enabled: bool = True):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
