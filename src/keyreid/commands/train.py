"""`keyreid train CONFIG` and `keyreid eval CONFIG --checkpoint PATH`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def train(config: Path = typer.Argument(..., help="YAML config (see configs/)."),
          set_: Optional[list[str]] = typer.Option(None, "--set", help="Override: key.sub=value (repeatable)."),
          no_resume: bool = typer.Option(False, "--no-resume", help="Start over even if OUTPUT_DIR/last.pt exists."),
          checkpoint_every: int = typer.Option(0, help="Also write last.pt every N steps (0: each epoch)."),
          ) -> None:
    """Train a model; resumes from OUTPUT_DIR/last.pt when it exists."""
    from keyreid.config import load_config
    from keyreid.engine.trainer import Trainer

    cfg = load_config(config, set_ or [])
    trainer = Trainer(cfg, resume=not no_resume, checkpoint_every_steps=checkpoint_every)
    if trainer.state.epoch:
        console.print(f"resuming {cfg.output_dir} at epoch {trainer.state.epoch + 1}, "
                      f"step {trainer.state.step_in_epoch}")
    result = trainer.fit()
    console.print(f"done: {json.dumps(result)}; checkpoints in {cfg.output_dir}")


def evaluate(config: Path = typer.Argument(..., help="YAML config used for training."),
             checkpoint: Path = typer.Option(..., help="Checkpoint file (best.pt or last.pt)."),
             set_: Optional[list[str]] = typer.Option(None, "--set", help="Override: key.sub=value."),
             output: Optional[Path] = typer.Option(None, help="Report file (JSON); default beside the checkpoint."),
             ) -> None:
    """Evaluate a checkpoint on the dataset's test split (query vs gallery)."""
    from keyreid.config import load_config
    from keyreid.engine.evaluate import evaluate_checkpoint

    cfg = load_config(config, set_ or [])
    report = evaluate_checkpoint(cfg, checkpoint, output)
    m = report["metrics"]
    keys = [k for k in ("R1", "R2", "R4", "R5", "R8", "R10", "mAP", "mINP", "MAP@R", "NMI") if k in m]
    table = Table(title=f"{cfg.name}: {cfg.data.dataset} test, {report['protocol']} protocol "
                        f"({report['distance']} distance{', flip' if report['flip'] else ''})")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(*(f"{100 * m[k]:.2f}" for k in keys))
    console.print(table)
    console.print(f"report: {report['path']}")
