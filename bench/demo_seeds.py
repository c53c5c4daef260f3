"""The demo's claim over several seeds: does `kae` beat `bnneck` by >= 5 mAP points on the
synthetic test split, on average? Trains bnneck / kae / kae + adaptive L2 per seed (same budget),
prints per-seed and mean +- std tables. A benchmark, not a test: ~13 minutes per seed on 2 cores.

    .venv/bin/python bench/demo_seeds.py --seeds 0 1 2 [--output runs/demo_seeds] [--set key=value]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from keyreid.demo import DEMO_RUNS, run_demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--output", type=Path, default=Path("runs/demo_seeds"))
    ap.add_argument("--data-root", type=Path, default=Path("data/synth"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    per_seed: dict[str, list[dict]] = {name: [] for name in DEMO_RUNS}
    t0 = time.time()
    for seed in args.seeds:
        for r in run_demo(args.output, args.data_root, seed, tuple(args.overrides), report=False):
            per_seed[r.name].append({**r.metrics, "train_seconds": r.train_seconds})
    wall = time.time() - t0

    cols = ("R1", "R5", "mAP", "mINP")
    lines = [f"seeds {args.seeds}; overrides {args.overrides or 'none'}; wall {wall / 60:.1f} min; "
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads", "",
             "| model | " + " | ".join(cols) + " | train s |", "|---" * (len(cols) + 2) + "|"]
    for name, runs in per_seed.items():
        cells = []
        for c in cols:
            v = 100 * np.array([r[c] for r in runs])
            cells.append(f"{v.mean():.1f} ± {v.std():.1f}")
        secs = np.mean([r["train_seconds"] for r in runs])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {secs:.0f} |")
    lines += ["", "per seed (mAP %): " + "; ".join(
        f"{name} " + ", ".join(f"{100 * r['mAP']:.1f}" for r in runs) for name, runs in per_seed.items())]
    gain = 100 * (np.mean([r["mAP"] for r in per_seed["kae"]]) - np.mean([r["mAP"] for r in per_seed["bnneck"]]))
    lines.append(f"kae - bnneck: {gain:+.1f} mAP points (target +5.0)")
    text = "\n".join(lines)
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "summary.md").write_text(text + "\n")
    (args.output / "summary.json").write_text(json.dumps(per_seed, indent=2))


if __name__ == "__main__":
    main()
