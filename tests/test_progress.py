"""Progress display: plain lines without a terminal, rich bars on one, nothing when disabled."""

from __future__ import annotations

import io
import re

import pytest

from keyreid.errors import KeyreidError
from keyreid.utils.progress import PlainProgress, progress_bar, progress_mode

LINE = re.compile(r"^(?P<desc>[^:]+): (?P<done>[\d,]+)/(?P<total>[\d,]+) \((?P<pct>\d+)%\), "
                  r"(?P<rate>[\d.]+|-) it/s, elapsed \d+:\d\d:\d\d, ETA (\d+:\d\d:\d\d|-:--:--)"
                  r"(, (?P<info>.*))?$")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("KEYREID_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)


def _lines(stream) -> list[re.Match]:
    out = stream.getvalue().splitlines()
    matches = [LINE.match(line) for line in out]
    assert all(matches), out
    return matches


def test_plain_lines_every_five_percent_with_fresh_info():
    stream = io.StringIO()
    with progress_bar(True, stream=stream) as bar:
        assert isinstance(bar, PlainProgress)
        task = bar.add_task("estimate", total=200)
        for i in range(1, 201):
            bar.advance(task, 1)
            bar.update(task, info=f"no person: {i // 7}")
    lines = _lines(stream)
    assert len(lines) == 20  # 10, 20, ..., 200
    assert [int(m["done"]) for m in lines] == list(range(10, 201, 10))
    assert [int(m["pct"]) for m in lines] == list(range(5, 101, 5))
    assert all(m["total"] == "200" and m["desc"] == "estimate" for m in lines)
    # the info set right after the advance is the one printed (as a rich bar would show it)
    assert [m["info"] for m in lines] == [f"no person: {d // 7}" for d in range(10, 201, 10)]


def test_batches_crossing_marks_print_once_each_and_the_end():
    stream = io.StringIO()
    with progress_bar(True, stream=stream) as bar:
        task = bar.add_task("features", total=100)
        for _ in range(6):
            bar.update(task, advance=16, info="x")
        bar.advance(task, 4)
    done = [int(m["done"]) for m in _lines(stream)]
    # every 16-image batch crosses at least one 5% mark; the final 4 reach the total
    assert done == [16, 32, 48, 64, 80, 96, 100]


def test_resumed_task_counts_rate_from_here_and_starts_after_done_work():
    stream = io.StringIO()
    with progress_bar(True, stream=stream, every=0.25) as bar:
        task = bar.add_task("keypoints", total=8, completed=5)
        bar.advance(task, 1)  # 6/8 = 75%: the first mark after the 5 done before
        bar.advance(task, 2)
    lines = _lines(stream)
    assert [(int(m["done"]), int(m["pct"])) for m in lines] == [(6, 75), (8, 100)]
    assert lines[-1]["info"] is None


def test_hidden_and_several_tasks():
    stream = io.StringIO()
    with progress_bar(True, stream=stream, every=0.5) as bar:
        a = bar.add_task("epochs", total=2)
        b = bar.add_task("epoch 1", total=4)
        bar.advance(b, 2)
        bar.advance(b, 2)
        bar.update(b, visible=False)
        bar.advance(a, 1)
        c = bar.add_task("epoch 2", total=4, visible=False)
        bar.advance(c, 4)  # hidden: silent
        bar.advance(a, 1)
    got = [(m["desc"], int(m["done"])) for m in _lines(stream)]
    assert got == [("epoch 1", 2), ("epoch 1", 4), ("epochs", 1), ("epochs", 2)]


def test_no_total_prints_every_hundred():
    stream = io.StringIO()
    bar = PlainProgress(stream)
    task = bar.add_task("scan")
    bar.advance(task, 250)
    bar.close()
    assert stream.getvalue().startswith("scan: 250, ")


def test_disabled_is_silent_and_tty_gets_rich(monkeypatch):
    stream = io.StringIO()
    with progress_bar(False, stream=stream) as bar:
        bar.advance(bar.add_task("x", total=3), 3)
    assert stream.getvalue() == ""
    tty = FakeTTY()
    with progress_bar(True, stream=tty) as bar:
        from rich.progress import Progress

        assert isinstance(bar, Progress)
        bar.advance(bar.add_task("x", total=3), 3)
    assert "x" in tty.getvalue() and "3/3" in tty.getvalue()
    assert progress_mode(True, tty) == "rich"
    monkeypatch.setenv("CI", "true")  # CI logs get plain lines even behind a pseudo-terminal
    assert progress_mode(True, tty) == "plain"
    monkeypatch.setenv("KEYREID_PROGRESS", "rich")
    assert progress_mode(True, io.StringIO()) == "rich"
    monkeypatch.setenv("KEYREID_PROGRESS", "off")
    assert progress_mode(True, tty) == "off"
    assert progress_mode(False, tty) == "off"
    monkeypatch.setenv("KEYREID_PROGRESS", "bars")
    with pytest.raises(KeyreidError, match="KEYREID_PROGRESS='bars'"):
        progress_mode(True, tty)


def test_advance_and_info_in_one_call_print_that_steps_info():
    stream = io.StringIO()
    with progress_bar(True, stream=stream, every=0.25) as bar:
        task = bar.add_task("estimate", total=8)
        for i in range(1, 5):
            bar.update(task, advance=2, info=f"step {i}")
            if i == 2:  # printed at once, not at the next call
                assert stream.getvalue().splitlines()[-1].endswith("step 2")
    assert [m["info"] for m in _lines(stream)] == ["step 1", "step 2", "step 3", "step 4"]
