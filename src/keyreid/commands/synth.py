"""`keyreid synth OUT`: render a synthetic re-ID set of articulated people (Market-1501 layout)."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer


def synth(
    out: Path = typer.Argument(..., help="Output folder (created; gets bounding_box_train/, query/, "
                                          "bounding_box_test/, keypoints.jsonl, synth.json)."),
    identities: Optional[int] = typer.Option(None, "--identities", "-n", min=1,
                                             help="Training identities (default: 300)."),
    test_identities: Optional[int] = typer.Option(None, "--test-identities", min=1,
                                                  help="Test identities (default: same as --identities)."),
    cameras: Optional[int] = typer.Option(None, "--cameras", "-c", min=2, max=9, help="Cameras (default: 6)."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Random seed (default: 0)."),
    height: Optional[int] = typer.Option(None, "--height", min=16, help="Image height (default: 128)."),
    width: Optional[int] = typer.Option(None, "--width", min=8, help="Image width (default: 64)."),
    distractors: Optional[int] = typer.Option(None, "--distractors", min=0,
                                              help="Gallery distractors, pid 0000 (default: 500)."),
    junk: Optional[int] = typer.Option(None, "--junk", min=0, help="Junk gallery images, pid -1 (default: 60)."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="YAML or JSON file of SynthConfig fields; the options above "
                                               "override it."),
    workers: int = typer.Option(0, "--workers", "-j", min=0,
                                help="Processes (0 = all CPUs); the output does not depend on it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a synthetic set keyreid generated in OUT (never a folder without its marker)."),
) -> None:
    """Render articulated people with part-level identities, COCO-17 keypoints and camera effects."""
    import yaml
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from keyreid.data.synthetic import SynthConfig, generate

    values: dict = {}
    if config is not None:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must hold a mapping of SynthConfig fields", param_hint="--config")
        known = {f.name for f in fields(SynthConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise typer.BadParameter(f"unknown field(s) {unknown}; known: {sorted(known)}", param_hint="--config")
        values.update(loaded)
    given = {"train_identities": identities, "cameras": cameras, "seed": seed, "height": height,
             "width": width, "distractors": distractors, "junk": junk}
    values.update({k: v for k, v in given.items() if v is not None})
    if test_identities is not None:
        values["test_identities"] = test_identities
    elif identities is not None and "test_identities" not in values:
        values["test_identities"] = identities
    try:
        cfg = SynthConfig(**values)
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None

    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("rendering", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        # a folder keyreid did not generate raises DataError: one line, exit 2 (cli.main)
        counts = generate(out, cfg, workers=workers or None, overwrite=overwrite, progress=progress)
    took = time.perf_counter() - start
    console.print(
        f"wrote {sum(counts[s] for s in ('train', 'query', 'gallery')):,} images to {out} in {took:.1f} s: "
        f"train {counts['train']:,}, query {counts['query']:,}, gallery {counts['gallery']:,} "
        f"(incl. {counts['distractors']:,} distractors and {counts['junk']:,} junk)",
        markup=False, highlight=False)
