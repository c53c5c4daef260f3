"""`keyreid datasets ...`: check a dataset tree, print its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

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


@app.command()
def check(
    root: Path = typer.Argument(..., help="Dataset root folder."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Adapter name, e.g. market1501."),
    no_official: bool = typer.Option(False, "--no-official",
                                     help="Do not require the official counts (synthetic or partial trees)."),
    verify_images: bool = typer.Option(True, "--verify-images/--no-verify-images",
                                       help="Decode every image with PIL (catches truncated files)."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o",
                                               help="Adapter option KEY=VALUE (repeatable)."),
) -> None:
    """List every problem of a dataset tree; exit code 1 if there is any."""
    from rich.console import Console

    from keyreid.data.datasets.check import check_dataset

    console = Console()
    try:
        report = check_dataset(root, dataset, expect_official=False if no_official else None,
                               verify_images=verify_images, **_parse_options(option))
    except (KeyError, TypeError, ValueError) as e:
        console.print(f"error: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if report.counts:
        console.print(_counts_table(f"{dataset} at {root}", report.counts, report.official))
    if verify_images:
        console.print(f"images decoded: {report.images_checked:,}")
    if report.problems:
        console.print(f"[red]{len(report.problems)} problem(s):[/red]")
        for p in report.problems:
            console.print(f"  - {p}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
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
    """Print identities, images and cameras per split (does not open the images)."""
    from rich.console import Console

    from keyreid.data.datasets.base import build_dataset
    from keyreid.data.datasets.check import official_counts
    from keyreid.errors import DataError

    console = Console()
    try:
        ds = build_dataset(dataset, root, on_error="skip" if skip_errors else "raise",
                           **_parse_options(option))
    except (DataError, KeyError, TypeError, ValueError) as e:
        console.print(f"error: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(_counts_table(f"{ds.name} at {ds.root} (protocol {ds.protocol})", ds.summary(),
                                official_counts(dataset)))
    if ds.skeleton:
        with_kp = sum(s.keypoints is not None for s in (*ds.train, *ds.query, *ds.gallery))
        console.print(f"keypoints: {ds.skeleton}, {with_kp:,} image(s)")
    if ds.problems:
        console.print(f"skipped: {len(ds.problems)} item(s)")
