"""`keyreid demo`: the main job (see keyreid.demo.run)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def demo(output: Path = typer.Option(Path("runs/demo"), help="Where runs and the report go."),
         data_root: Path = typer.Option(Path("data/synth"), help="Synthetic benchmark (generated if absent)."),
         seed: int = typer.Option(0, help="Seed of every run (the benchmark itself uses seed 0)."),
         run: Optional[list[str]] = typer.Option(None, help="Only these runs: bnneck, kae, kae+adaptiveL2."),
         set_: Optional[list[str]] = typer.Option(None, "--set", help="Override for every run: key=value."),
         ) -> None:
    """Generate the synthetic benchmark, train bnneck / kae / kae + adaptive L2, evaluate, report."""
    from keyreid.demo.run import run_demo

    run_demo(output, data_root, seed, tuple(set_ or ()), run)
