"""`keyreid train CONFIG` and `keyreid eval CONFIG --checkpoint PATH`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from keyreid.errors import KeyreidError

console = Console()


def train(config: Path = typer.Argument(..., help="YAML config (see configs/)."),
          set_: Optional[list[str]] = typer.Option(None, "--set", help="Override: key.sub=value (repeatable)."),
          no_resume: bool = typer.Option(False, "--no-resume", help="Start over even if OUTPUT_DIR/last.pt exists."),
          checkpoint_every: int = typer.Option(0, min=0, help="Also write last.pt every N steps (0: each epoch)."),
          allow_config_change: bool = typer.Option(
              False, "--allow-config-change",
              help="Resume OUTPUT_DIR/last.pt although the config differs from the one it was trained "
                   "with (lr, epochs, ...; never a different model)."),
          ) -> None:
    """Train a model; resumes from OUTPUT_DIR/last.pt when it exists (with the same config)."""
    from keyreid.config import load_config
    from keyreid.commands.run_start import print_run_start
    from keyreid.engine.trainer import Trainer

    cfg = load_config(config, set_ or [])
    trainer = Trainer(cfg, resume=not no_resume, checkpoint_every_steps=checkpoint_every,
                      allow_config_change=allow_config_change)
    print_run_start(console, cfg.output_dir, trainer.set_aside, trainer.config_changes)
    if trainer.state.epoch or trainer.state.step_in_epoch:
        console.print(f"resuming {cfg.output_dir} at epoch {trainer.state.epoch + 1}, "
                      f"step {trainer.state.step_in_epoch}")
    result = trainer.fit()
    console.print(f"done: {json.dumps(result)}; checkpoints in {cfg.output_dir}")


def evaluate(config: Optional[Path] = typer.Argument(
                 None, help="YAML config naming the data and the evaluation settings; default: the "
                            "config stored in the checkpoint."),
             checkpoint: Path = typer.Option(..., help="Checkpoint file (best.pt or last.pt)."),
             set_: Optional[list[str]] = typer.Option(None, "--set", help="Override: key.sub=value."),
             output: Optional[Path] = typer.Option(None, help="Report file (JSON); default beside the checkpoint."),
             ) -> None:
    """Evaluate a checkpoint on the dataset's test split (query vs gallery). The checkpoint
    decides the model; the config (default: the checkpoint's own) the data and evaluation."""
    from keyreid.config import config_from_dict, load_config
    from keyreid.utils.checkpoint import load_checkpoint
    from keyreid.engine.checks import check_names
    from keyreid.engine.evaluate import evaluate_checkpoint

    if config is not None:
        cfg = load_config(config, set_ or [])
    else:
        stored = load_checkpoint(checkpoint).get("config")
        if stored is None:
            raise KeyreidError(f"{checkpoint}: stores no config; give the YAML it was trained with")
        cfg = config_from_dict(stored, f"{checkpoint}: stored config", set_ or [])
    check_names(cfg, model=False)  # the model comes from the checkpoint
    report = evaluate_checkpoint(cfg, checkpoint, output,
                                 warn=lambda text: console.print(text, markup=False))
    m = report["metrics"]
    keys = [k for k in ("R1", "R2", "R4", "R5", "R8", "R10", "mAP", "mINP", "MAP@R", "NMI") if k in m]
    table = Table(title=f"{cfg.name}: {cfg.data.dataset} test, {report['protocol']} protocol "
                        f"({report['distance']} distance{', flip' if report['flip'] else ''})")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(*(f"{100 * m[k]:.2f}" for k in keys))
    console.print(table)
    console.print(f"report: {report['path']}")
