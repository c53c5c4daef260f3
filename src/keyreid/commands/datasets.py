"""`keyreid datasets ...`: check a dataset tree, print its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from keyreid.errors import DataError, KeyreidError

app = typer.Typer(help="Check dataset trees and summarise them.", no_args_is_help=True)


def _parse_options(pairs: Optional[list[str]]) -> dict:
    """KEY=VALUE adapter options; values that look like numbers or booleans are converted."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        else:
            for conv in (int, float):
                try:
                    out[key] = conv(value)
                    break
                except ValueError:
                    continue
            else:
                out[key] = value
    return out


def _counts_table(title: str, counts: dict, official: Optional[dict]):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("split")
    for key in ("ids", "images", "cameras"):
        table.add_column(key, justify="right")
        if official:
            table.add_column(f"official {key}", justify="right")
    for split in ("train", "query", "gallery"):
        row = [split]
        for key in ("ids", "images", "cameras"):
            got = counts.get(split, {}).get(key)
            want = (official or {}).get(split, {}).get(key)
            text = "-" if got is None else f"{got:,}"
            if want is not None and got != want:
                text = f"[red]{text}[/red]"
            row.append(text)
            if official:
                row.append("-" if want is None else f"{want:,}")
        table.add_row(*row)
    return table


def _one_line(e: Exception) -> KeyreidError:
    """An adapter's argument mistake (bad option value, unknown name) as keyreid's one-line error."""
    return e if isinstance(e, KeyreidError) else DataError(None, str(e).strip("'\""))


@app.command()
def check(
    root: Path = typer.Argument(..., help="Dataset root folder."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Adapter name, e.g. market1501."),
    official: bool = typer.Option(False, "--official/--no-official",
                                  help="Require the official release's counts (a difference is a "
                                       "problem); without it they are shown for information."),
    verify_images: bool = typer.Option(True, "--verify-images/--no-verify-images",
                                       help="Decode every image with PIL (catches truncated files)."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o",
                                               help="Adapter option KEY=VALUE (repeatable)."),
) -> None:
    """List every problem of a dataset tree at once; exit code 2 if there is any.

    A tree that cannot be read at all (wrong root, unknown dataset or option) is one error line,
    exit code 2, as in `datasets summary`.
    """
    from rich.console import Console

    from keyreid.data.datasets.check import check_dataset

    console = Console()
    try:
        report = check_dataset(root, dataset, expect_official=official, verify_images=verify_images,
                               **_parse_options(option))
    except (KeyError, TypeError, ValueError) as e:
        raise _one_line(e) from None
    if report.dataset is None:  # nothing could be parsed: the same one line as `summary`
        raise DataError(None, report.problems[0])
    console.print(_counts_table(f"{dataset} at {root}", report.counts, report.official))
    if report.official and not official and report.mismatches():
        console.print(f"{len(report.mismatches())} count(s) differ from the official release (red): "
                      "information only, --official requires them")
    if verify_images:
        console.print(f"images decoded: {report.images_checked:,}")
    if report.problems:
        console.print(f"[red]{len(report.problems)} problem(s):[/red]")
        for p in report.problems:
            console.print(f"  - {p}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    console.print("[green]no problems found[/green]")


@app.command()
def summary(
    root: Path = typer.Argument(..., help="Dataset root folder."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Adapter name, e.g. market1501."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o",
                                               help="Adapter option KEY=VALUE (repeatable)."),
    skip_errors: bool = typer.Option(False, "--skip-errors",
                                     help="Skip bad items (counted below) instead of stopping."),
) -> None:
    """Print identities, images and cameras per split (does not open the images); the first bad
    item is an error (exit code 2) unless --skip-errors."""
    from rich.console import Console

    from keyreid.data.datasets.base import build_dataset
    from keyreid.data.datasets.check import official_counts

    console = Console()
    try:
        ds = build_dataset(dataset, root, on_error="skip" if skip_errors else "raise",
                           **_parse_options(option))
    except (KeyError, TypeError, ValueError) as e:
        raise _one_line(e) from None
    console.print(_counts_table(f"{ds.name} at {ds.root} (protocol {ds.protocol})", ds.summary(),
                                official_counts(dataset)))
    if ds.skeleton:
        with_kp = sum(s.keypoints is not None for s in (*ds.train, *ds.query, *ds.gallery))
        console.print(f"keypoints: {ds.skeleton}, {with_kp:,} image(s)")
    if ds.problems:
        console.print(f"skipped: {len(ds.problems)} item(s)")
