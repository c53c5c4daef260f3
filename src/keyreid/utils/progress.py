"""Rich progress bars with ETA, or a silent stand-in."""

from __future__ import annotations

from contextlib import contextmanager

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class _Silent:
    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, *args, **kwargs) -> None:
        pass

    def update(self, *args, **kwargs) -> None:
        pass


@contextmanager
def progress_bar(enabled: bool = True):
    if not enabled:
        yield _Silent()
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), transient=False) as bar:
        original = bar.add_task

        def add_task(description, **kwargs):
            kwargs.setdefault("info", "")
            return original(description, **kwargs)

        bar.add_task = add_task
        yield bar
