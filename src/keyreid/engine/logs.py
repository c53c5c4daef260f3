"""Run logs: a CSV file per table (append-friendly, survives resume) and TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional


class CSVLog:
    """Rows of dicts appended to a CSV; columns fixed by the first row written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fields: Optional[list[str]] = None
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                self.fields = next(csv.reader(f), None)

    def write(self, row: dict) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def truncate_after(self, key: str, value: float) -> None:
        """Drop rows with row[key] > value (a resumed run rewrites what came after its checkpoint)."""
        if not self.path.exists() or self.fields is None:
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if float(r[key]) <= value]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(rows)

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
