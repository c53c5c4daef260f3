"""`keyreid synth-video OUT`: render synthetic multi-camera video with tracking ground truth
(MOTChallenge layout, global identity ids, keypoints, noisy detections)."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer


def synth_video(
    out: Path = typer.Argument(..., help="Output folder (created; gets scene.json and c1/ .. cN/ with seqinfo.ini, "
                                          "img1/, gt/gt.txt, gt/keypoints.jsonl, det/det.txt)."),
    cameras: Optional[int] = typer.Option(None, "--cameras", "-c", help="Cameras, 1..9 (default: 4)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Length in seconds (default: 30)."),
    fps: Optional[int] = typer.Option(None, "--fps", help="Frames per second (default: 10)."),
    identities: Optional[int] = typer.Option(None, "--identities", "-n", help="People in total (default: 40)."),
    width: Optional[int] = typer.Option(None, "--width", help="Frame width (default: 384)."),
    height: Optional[int] = typer.Option(None, "--height", help="Frame height (default: 216)."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Random seed (default: 0)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML or JSON file of VideoConfig fields; the "
                                                                 "options above override it."),
    workers: int = typer.Option(0, "--workers", "-j", help="Processes (0 = all CPUs); the output does not "
                                                           "depend on it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a synthetic video keyreid wrote in OUT "
                                                              "(never a folder without its marker)."),
) -> None:
    """Render people walking through overlapping and distant cameras, with gt, keypoints and detections."""
    import yaml
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from keyreid.config import ConfigError
    from keyreid.data.synthetic import VideoConfig, generate_video

    # a mistake is a ConfigError: cli.main prints it as one line and exits 2 (a typer.BadParameter
    # would print a usage panel instead)
    values: dict = {}
    if config is not None:
        try:
            loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"--config {config}: cannot read it ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {config}: must hold a mapping of VideoConfig fields")
        known = {f.name for f in fields(VideoConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise ConfigError(f"--config {config}: unknown field(s) {unknown}; known: {sorted(known)}")
        values.update(loaded)
    given = {"cameras": cameras, "seconds": seconds, "fps": fps, "identities": identities, "width": width,
             "height": height, "seed": seed}
    values.update({k: v for k, v in given.items() if v is not None})
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0 = all CPUs); got {workers}")
    try:
        cfg = VideoConfig(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad video config: {e}") from None

    console = Console(stderr=True)
    start = time.perf_counter()
    bar = Progress(TextColumn("rendering frames"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, transient=False)
    task = None

    def progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:  # shown once the folder is accepted: a refusal stays one line
            bar.start()
            task = bar.add_task("rendering", total=total)
        bar.update(task, completed=done, total=total)

    try:
        # a folder keyreid did not write raises DataError: one line, exit 2 (cli.main)
        counts = generate_video(out, cfg, workers=workers or None, overwrite=overwrite, progress=progress)
    finally:
        bar.stop()
    took = time.perf_counter() - start
    console.print(f"wrote {counts['frames']:,} frames of {counts['cameras']} cameras ({counts['boxes']:,} boxes, "
                  f"{counts['detections']:,} detections) to {out} in {took:.1f} s", markup=False, highlight=False,
                  soft_wrap=True)
