"""`keyreid demo`: the main job (see keyreid.demo.run); `--suite generation`: the generation
methods at demo scale (see keyreid.demo.generation); `--suite tracking`: BoxMOT's trackers with
keyreid encoders on synthetic multi-camera video (see keyreid.demo.tracking)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from keyreid.errors import KeyreidError

SUITES = ("default", "generation", "tracking")


def demo(output: Path = typer.Option(Path("runs/demo"), help="Where runs and the report go."),
         data_root: Path = typer.Option(Path("data/synth"), help="Synthetic benchmark (generated if absent)."),
         seed: int = typer.Option(0, help="Seed of every run (the benchmark itself uses seed 0)."),
         run: Optional[list[str]] = typer.Option(None, help="Only these runs: bnneck, kae, kae+adaptiveL2 "
                                                 "(--suite generation: pngan, fdgan, ipgan; --suite tracking: "
                                                 "tracker or encoder names, e.g. botsort, kae)."),
         set_: Optional[list[str]] = typer.Option(None, "--set", help="Override for every re-ID run: key=value."),
         suite: str = typer.Option("default", help="default: bnneck / kae / kae + adaptive L2; generation: "
                                   "PN-GAN, FD-GAN, IP-GAN measured against the synthetic ground truth "
                                   "(reuses the default suite's kae and bnneck runs); tracking: trackers x "
                                   "encoders on synthetic multi-camera video, TrackEval's metrics (reuses them too)."),
         ) -> None:
    """Generate the synthetic benchmark, train bnneck / kae / kae + adaptive L2, evaluate, report
    (--suite generation: PN-GAN, FD-GAN and IP-GAN against the synthetic ground truth)."""
    if suite not in SUITES:
        raise KeyreidError(f"--suite: unknown suite {suite!r}; one of {', '.join(SUITES)}")
    if suite == "tracking":
        from keyreid.demo.tracking import run_tracking_demo

        run_tracking_demo(output, data_root, seed, tuple(set_ or ()), run)
        return
    if suite == "generation":
        from keyreid.demo.generation import run_generation_demo

        run_generation_demo(output, data_root, seed, tuple(set_ or ()), run)
        return
    from keyreid.demo.run import run_demo

    run_demo(output, data_root, seed, tuple(set_ or ()), run)
