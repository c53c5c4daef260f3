"""The main job: generate the synthetic benchmark, train bnneck / kae / kae + adaptive L2 with the
same budget and seed, evaluate on the test split, print one table and write a report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from keyreid.config import Config, load_config
from keyreid.data.synthetic import SynthConfig, generate, is_synthetic_tree
from keyreid.engine.trainer import Trainer
from keyreid.engine.evaluate import test_distances
from keyreid.evaluation.split import reid_metrics
from keyreid.utils.io import atomic_write_text

console = Console()

DEMO_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "demo.yaml"

# name -> overrides of configs/demo.yaml
DEMO_RUNS: dict[str, list[str]] = {
    "bnneck": ["model.head=bnneck"],
    "kae": ["model.head=kae"],
    "kae+adaptiveL2": ["model.head=kae", "regularizer.adaptive_l2=true"],
}


@dataclass
class RunResult:
    name: str
    metrics: dict
    train_seconds: float
    eval_seconds: float
    output_dir: Path


def ensure_synthetic(root: Path, seed: int = 0, workers: Optional[int] = None) -> None:
    """Generate the default synthetic benchmark unless a complete one is already there.

    Only a folder keyreid generated is (re)generated: a real dataset at `root` is an error, never
    overwritten (generate() checks the marker)."""
    complete = (root / "synth.json").is_file() and (root / "keypoints.jsonl").is_file()
    if complete and is_synthetic_tree(root):
        console.print(f"synthetic benchmark: reusing {root}")
        return
    console.print(f"synthetic benchmark: generating {root} (seed {seed})")
    t0 = time.time()
    generate(root, SynthConfig(seed=seed), workers=workers, overwrite=True)
    console.print(f"  done in {time.time() - t0:.1f} s")


def train_and_test(name: str, cfg: Config) -> tuple[RunResult, Trainer, np.ndarray]:
    t0 = time.time()
    trainer = Trainer(cfg, resume=True)
    trainer.fit()
    train_seconds = sum(float(r.get("seconds", 0)) for r in trainer.metrics_log.read()) \
        if trainer.metrics_log else time.time() - t0
    best = Path(cfg.output_dir) / "best.pt"
    trainer.load_weights(best)
    t1 = time.time()
    ds = trainer.data.dataset
    distmat = test_distances(trainer.model, ds.query, ds.gallery, trainer.test_transform, cfg,
                             trainer.device)
    metrics = reid_metrics(distmat, ds.query, ds.gallery, cfg.eval.max_rank)
    eval_seconds = time.time() - t1
    result = RunResult(name, metrics, train_seconds, eval_seconds, Path(cfg.output_dir))
    atomic_write_text(Path(cfg.output_dir) / "test_metrics.json",
                      json.dumps({"metrics": metrics, "train_seconds": train_seconds,
                                  "eval_seconds": eval_seconds}, indent=2))
    return result, trainer, distmat


def results_table(results: list[RunResult], title: str) -> Table:
    table = Table(title=title)
    for col in ("model", "R1", "R5", "mAP", "mINP", "train s", "eval s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        m = r.metrics
        table.add_row(r.name, f"{100 * m['R1']:.1f}", f"{100 * m['R5']:.1f}", f"{100 * m['mAP']:.1f}",
                      f"{100 * m['mINP']:.1f}", f"{r.train_seconds:.0f}", f"{r.eval_seconds:.0f}")
    return table


def run_demo(output: Path = Path("runs/demo"), data_root: Path = Path("data/synth"), seed: int = 0,
             overrides: tuple[str, ...] = (), runs: Optional[list[str]] = None,
             report: bool = True) -> list[RunResult]:
    ensure_synthetic(data_root)
    results, trainers, distmats = [], {}, {}
    for name in runs or list(DEMO_RUNS):
        run_dir = output / f"seed{seed}" / name.replace("+", "_")
        cfg = load_config(DEMO_CONFIG, [*DEMO_RUNS[name], f"data.root={data_root}", f"seed={seed}",
                                        f"output_dir={run_dir}", f"name={name}", *overrides])
        console.rule(f"[bold]{name}")
        result, trainer, distmat = train_and_test(name, cfg)
        results.append(result)
        trainers[name], distmats[name] = trainer, distmat
    console.print(results_table(results, f"synthetic benchmark, test split, seed {seed}"))
    summary = {r.name: {**r.metrics, "train_seconds": r.train_seconds, "eval_seconds": r.eval_seconds}
               for r in results}
    atomic_write_text(output / f"seed{seed}" / "results.json", json.dumps(summary, indent=2))
    if report:
        from keyreid.demo.report import write_demo_report

        path = write_demo_report(output / f"seed{seed}", results, trainers, distmats)
        console.print(f"report: {path}")
    if (output, data_root, seed) == (Path("runs/demo"), Path("data/synth"), 0) and "kae" in (runs or DEMO_RUNS):
        console.print("search the synthetic gallery in a browser: keyreid serve --demo  (http://127.0.0.1:8000)")
    return results
