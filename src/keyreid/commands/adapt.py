"""`keyreid adapt CHECKPOINT --target ROOT -o RUN`: adapt a trained model to a new site's
unlabelled images (keyreid.adapt; the flags are shortcuts for keys of its typed config)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console()


def adapt(checkpoint: Path = typer.Argument(..., help="The source model: a keyreid checkpoint (best.pt)."),
          target: Optional[Path] = typer.Option(None, "--target", help="The new site's images (target.root)."),
          dataset: Optional[str] = typer.Option(
              None, "--dataset", help="The target's layout: a dataset adapter name (default unlabelled: "
                                      "every image under ROOT, no identities)."),
          output: Optional[Path] = typer.Option(None, "-o", "--output", help="Run folder (output_dir)."),
          config: Optional[Path] = typer.Option(None, "--config", help="YAML of adapt settings (see "
                                                                       "keyreid.adapt.config)."),
          set_: Optional[list[str]] = typer.Option(None, "--set", help="Override: key.sub=value (repeatable)."),
          eps: Optional[float] = typer.Option(None, "--eps", help="DBSCAN eps on Jaccard distances (0.6)."),
          min_samples: Optional[int] = typer.Option(None, "--min-samples", help="DBSCAN min_samples (4)."),
          epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (each re-clusters)."),
          cam_pattern: Optional[str] = typer.Option(
              None, "--cam-pattern", help="Regex with a group 'cam' read from file names (unlabelled "
                                          "target): camera proxies (--set memory.kind=camera) and "
                                          "cross-camera cluster counts."),
          no_resume: bool = typer.Option(False, "--no-resume", help="Start over even if RUN/last.pt exists."),
          checkpoint_every: int = typer.Option(0, min=0, help="Also write last.pt every N steps (0: each epoch)."),
          allow_config_change: bool = typer.Option(
              False, "--allow-config-change",
              help="Resume RUN/last.pt although the settings differ (lr, epochs, eps...; never another "
                   "source model or target)."),
          ) -> None:
    """Adapt CHECKPOINT to unlabelled target images (cluster-contrast pseudo-labels); resumes
    from RUN/last.pt when it exists. best.pt in RUN is the adapted model (load it like any
    checkpoint: search, index, serve, export)."""
    from keyreid.adapt.config import load_adapt_config
    from keyreid.adapt.method import Adaptation
    from keyreid.commands.run_start import print_run_start

    overrides = [f"checkpoint={checkpoint}"]
    flags = {"target.root": target, "target.dataset": dataset, "output_dir": output, "cluster.eps": eps,
             "cluster.min_samples": min_samples, "epochs": epochs}
    overrides += [f"{k}={v}" for k, v in flags.items() if v is not None]
    overrides += list(set_ or [])
    cfg = load_adapt_config(config, overrides)
    if cam_pattern is not None:   # a regex is no YAML scalar to trust to --set
        cfg.target.options = {**cfg.target.options, "cam_pattern": cam_pattern}
    method = Adaptation(cfg, resume=not no_resume, checkpoint_every_steps=checkpoint_every,
                        allow_config_change=allow_config_change,
                        notify=lambda text: console.print(text, markup=False))
    print_run_start(console, cfg.output_dir, method.set_aside, method.config_changes)
    if method.state.epoch or method.state.step_in_epoch:
        console.print(f"resuming {cfg.output_dir} at epoch {method.state.epoch + 1}, "
                      f"step {method.state.step_in_epoch}")
    result = method.fit()
    final = {k: v for k, v in result["final"].items() if k.startswith(("clusters", "outliers", "test_", "truth_"))}
    console.print(f"done: {result['epochs']} epochs, {json.dumps(final)}; adapted model {cfg.output_dir}/best.pt",
                  markup=False)
