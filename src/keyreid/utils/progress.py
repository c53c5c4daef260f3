"""Progress for long jobs: rich bars on a terminal, plain lines in logs, or nothing.

    with progress_bar(show) as bar:
        task = bar.add_task("keypoints", total=n)        # info="" is a free text field
        bar.advance(task, 16)
        bar.update(task, info="no person: 3")            # or update(task, advance=16, info=...)

Without a terminal (output redirected to a file, a CI log) rich bars print nothing until the end,
so a job looked dead for minutes: there each task prints one plain line per `every` of its total
(5% by default) and one at the end, e.g.

    keypoints (mediapipe): 120/400 (30%) 41.2 it/s, elapsed 0:00:03, ETA 0:00:07, no person: 5

KEYREID_PROGRESS=rich|plain|off overrides the choice (e.g. `plain` for a CI runner that
pretends to be a terminal). The CI variable most CI services set also selects plain lines.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional, TextIO

MODES = ("rich", "plain", "off")


class _Silent:
    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, *args, **kwargs) -> None:
        pass

    def update(self, *args, **kwargs) -> None:
        pass


def _clock(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class _Task:
    description: str
    total: Optional[float]
    completed: float
    fields: dict
    visible: bool = True
    start: float = field(default_factory=time.monotonic)
    start_completed: float = 0.0  # work done before this run (a resume): not in the rate
    next_mark: float = 0.0  # completed count at which the next line is due
    due: Optional[tuple[float, float]] = None  # (completed, time) of a line not yet printed
    finished: bool = False


class PlainProgress:
    """The subset of rich.progress.Progress that keyreid uses, printing plain lines.

    A line due when work advances without new fields is printed at the next call (or at the end
    of the block), so `advance` followed by `update(info=...)` prints the fresh info field, as a
    rich bar would show; `update(advance=n, info=...)` prints at once.
    """

    def __init__(self, stream: TextIO, every: float = 0.05):
        if not 0 < every <= 1:
            raise ValueError(f"every must be in (0, 1], got {every}")
        self.stream, self.every = stream, every
        self.tasks: list[_Task] = []

    def add_task(self, description: str, total: Optional[float] = None, completed: float = 0,
                 visible: bool = True, **fields) -> int:
        fields.setdefault("info", "")
        task = _Task(description, total, completed, fields, visible, start_completed=completed)
        task.next_mark = self._mark_after(task, completed)
        self.tasks.append(task)
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: Optional[float] = None,
               completed: Optional[float] = None, advance: Optional[float] = None,
               description: Optional[str] = None, visible: Optional[bool] = None,
               **fields) -> None:
        task = self.tasks[task_id]
        advances = completed is not None or bool(advance)
        if advances:
            self._flush()  # a line due from an earlier step keeps that step's fields
        if description is not None:
            task.description = description
        if total is not None:
            task.total = total
        if visible is not None:
            task.visible = visible
        task.fields.update(fields)
        if advances:
            task.completed = completed if completed is not None else task.completed + advance
            if task.visible and not task.finished and task.completed >= task.next_mark:
                task.due = (task.completed, time.monotonic())
                task.next_mark = self._mark_after(task, task.completed)
        if fields or not advances:
            # update(advance=n, info=...) or advance(); update(info=...): the fields are this
            # step's, so a line now due prints with them
            self._flush()

    def close(self) -> None:
        self._flush()

    # ----------------------------------------------------------------------------------------

    def _mark_after(self, task: _Task, done: float) -> float:
        """The next completed count that deserves a line: the next multiple of every * total
        (the total itself included); without a total, every 100 items."""
        if not task.total:
            step = 100
            return (math.floor(done / step) + 1) * step
        step = self.every * task.total
        mark = (math.floor(done / step + 1e-9) + 1) * step
        return min(mark, task.total) if done < task.total else math.inf

    def _flush(self) -> None:
        for task in self.tasks:
            if task.due is not None:
                done, when = task.due
                task.due = None
                if task.total and done >= task.total:
                    task.finished = True
                self.stream.write(self._line(task, done, when) + "\n")
        self.stream.flush()

    def _line(self, task: _Task, done: float, when: float) -> str:
        elapsed = when - task.start
        rate = (done - task.start_completed) / elapsed if elapsed > 0 else float("nan")
        parts = [f"{task.description}: {_num(done)}"]
        if task.total:
            parts[0] += f"/{_num(task.total)} ({100 * done / task.total:.0f}%)"
            eta = (task.total - done) / rate if rate > 0 else None
        else:
            eta = None
        parts.append(f"{rate:.1f} it/s" if math.isfinite(rate) else "- it/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if task.total:
            parts.append(f"ETA {_clock(eta)}")
        info = str(task.fields.get("info", "")).strip()
        if info:
            parts.append(info)
        return ", ".join(parts)


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,.1f}"


def progress_mode(enabled: bool = True, stream: Optional[TextIO] = None) -> str:
    """"off", "plain" or "rich" for this stream (default: stdout now)."""
    if not enabled:
        return "off"
    forced = os.environ.get("KEYREID_PROGRESS", "").strip().lower()
    if forced:
        if forced not in MODES:
            from keyreid.errors import KeyreidError

            raise KeyreidError(f"KEYREID_PROGRESS={forced!r}: expected one of {', '.join(MODES)}")
        return forced
    stream = sys.stdout if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like without isatty
        tty = False
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return "rich" if tty and not ci else "plain"


@contextmanager
def progress_bar(enabled: bool = True, stream: Optional[TextIO] = None, every: float = 0.05):
    """Progress display for a block: see the module docstring. stream defaults to stdout."""
    mode = progress_mode(enabled, stream)
    if mode == "off":
        yield _Silent()
        return
    stream = sys.stdout if stream is None else stream
    if mode == "plain":
        bar = PlainProgress(stream, every)
        try:
            yield bar
        finally:
            bar.close()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    console = Console(file=stream, force_terminal=True) if stream is not sys.stdout else None
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), transient=False, console=console) as bar:
        original = bar.add_task

        def add_task(description, **kwargs):
            kwargs.setdefault("info", "")
            return original(description, **kwargs)

        bar.add_task = add_task
        yield bar
