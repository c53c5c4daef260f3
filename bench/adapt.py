"""Adapting to a new site (issue 25): source-only vs `keyreid adapt` vs supervised on the target
(the ceiling), on the synthetic target site, demo budget, per head and seed.

    .venv/bin/python bench/adapt.py --heads bnneck kae --seeds 0 1 2 [--output runs/bench_adapt]

Per head and seed: train on the default benchmark (data/synth, configs/demo.yaml), test that
model on the target site's test split (source-only); adapt it to the target's training images
with their labels sealed (keyreid.adapt; the pseudo-label quality is logged, never trained on);
train the same config on the target's labelled training split (supervised, the ceiling). Every
number is the target test split's (query vs gallery, cross-camera protocol). Runs already
finished in --output are reused (each run resumes from its own last.pt), so the script can be
stopped and run again. The kae head adapts with its heatmap loss on the target's keypoint
sidecar (the synthetic ground truth; at a real site `keyreid keypoints estimate` makes it).

"gap closed" = (adapted - source-only) / (supervised - source-only), on mAP.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from keyreid.adapt.config import AdaptConfig, ClusterSettings, TargetSettings
from keyreid.adapt.method import Adaptation, evaluate_target
from keyreid.adapt.target import load_target
from keyreid.config import load_config
from keyreid.data.synthetic import SynthConfig, generate, is_synthetic_tree
from keyreid.demo.run import DEMO_CONFIG, DEMO_RUNS, ensure_synthetic, train_and_test
from keyreid.engine.data import make_transforms
from keyreid.inference import load_model

ROOT = Path(__file__).resolve().parents[1]
TARGET_CONFIG = ROOT / "configs" / "synth" / "target_site.yaml"


def ensure_target(root: Path) -> None:
    if (root / "synth.json").is_file() and (root / "keypoints.jsonl").is_file() and is_synthetic_tree(root):
        return
    print(f"target site: generating {root} from {TARGET_CONFIG.name}", flush=True)
    generate(root, SynthConfig.from_dict(yaml.safe_load(TARGET_CONFIG.read_text())), overwrite=True)


def supervised(head: str, seed: int, data_root: Path, out: Path, extra: list[str]) -> tuple[dict, float]:
    cfg = load_config(DEMO_CONFIG, [*DEMO_RUNS[head], f"data.root={data_root}", f"seed={seed}",
                                    f"output_dir={out}", f"name={head}", *extra])
    result, _, _ = train_and_test(head, cfg)
    return result.metrics, result.train_seconds


def source_on_target(checkpoint: Path, target_root: Path, seed: int) -> dict:
    loaded = load_model(checkpoint, "cpu")
    target = load_target(TargetSettings(root=str(target_root), dataset="market1501"), seed, lambda s: None)
    model = loaded.model
    _, test_tf = make_transforms(loaded.config, loaded.skeleton, model.backbone.input_mean,
                                 model.backbone.input_std)
    return evaluate_target(model, target, test_tf, loaded.config, torch.device("cpu"))


def adapted(checkpoint: Path, target_root: Path, seed: int, out: Path, epochs: int, eps: float,
            extra: list[str]) -> tuple[dict, float, list[dict]]:
    from keyreid.adapt.config import load_adapt_config

    cfg = load_adapt_config(None, [f"checkpoint={checkpoint}", f"target.root={target_root}",
                                   "target.dataset=market1501", f"output_dir={out}", f"seed={seed}",
                                   f"epochs={epochs}", f"cluster.eps={eps}", *extra])
    t0 = time.time()
    method = Adaptation(cfg, show_progress=False)
    result = method.fit()
    rows = method.state.history
    final = result["final"]
    metrics = {k[len("test_"):]: v for k, v in final.items() if k.startswith("test_")}
    return metrics, time.time() - t0, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", nargs="+", default=["bnneck", "kae"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--output", type=Path, default=Path("runs/bench_adapt"))
    ap.add_argument("--source-root", type=Path, default=Path("data/synth"))
    ap.add_argument("--target-root", type=Path, default=Path("data/synth_target"))
    ap.add_argument("--epochs", type=int, default=AdaptConfig.epochs)
    ap.add_argument("--eps", type=float, default=ClusterSettings.eps)
    ap.add_argument("--adapt-set", action="append", default=[], help="adapt config override key=value")
    ap.add_argument("--no-supervised", action="store_true", help="skip the ceiling runs")
    ap.add_argument("--adapted-name", default="adapted", help="run folder name of the adaptation (variants)")
    args = ap.parse_args()

    ensure_synthetic(args.source_root)
    ensure_target(args.target_root)
    rows = []
    t_all = time.time()
    for seed in args.seeds:
        for head in args.heads:
            base = args.output / f"seed{seed}" / head
            print(f"== {head}, seed {seed}", flush=True)
            src_metrics, src_s = supervised(head, seed, args.source_root, base / "source", [])
            ckpt = base / "source" / "best.pt"
            only = source_on_target(ckpt, args.target_root, seed)
            ad, ad_s, log = adapted(ckpt, args.target_root, seed, base / args.adapted_name, args.epochs, args.eps,
                                    args.adapt_set)
            sup, sup_s = ({}, 0.0) if args.no_supervised else \
                supervised(head, seed, args.target_root, base / "supervised", [])
            row = {"head": head, "seed": seed, "source_on_source_mAP": src_metrics["mAP"],
                   "source_only": only, "adapted": ad, "supervised": sup, "source_seconds": src_s,
                   "adapt_seconds": ad_s, "supervised_seconds": sup_s,
                   "clusters": [r.get("clusters") for r in log], "truth_ari": [r.get("truth_ari") for r in log],
                   "cluster_seconds": [r.get("cluster_seconds") for r in log]}
            rows.append(row)
            (args.output).mkdir(parents=True, exist_ok=True)
            (args.output / f"rows_{args.adapted_name}.json").write_text(json.dumps(rows, indent=2))
            print(json.dumps({k: row[k] for k in ("head", "seed", "adapt_seconds")}) +
                  f" source-only mAP {100 * only['mAP']:.1f}, adapted {100 * ad['mAP']:.1f}, supervised "
                  f"{100 * sup.get('mAP', float('nan')):.1f}", flush=True)

    lines = [f"seeds {args.seeds}; adapt epochs {args.epochs}, eps {args.eps}, overrides {args.adapt_set or 'none'}; "
             f"wall {(time.time() - t_all) / 60:.1f} min; {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} torch threads", "",
             "| head | source on source mAP | source-only mAP / R1 | adapted mAP / R1 | supervised mAP / R1 | "
             "gap closed | adapt s | pseudo-label ARI (last) |", "|---" * 8 + "|"]
    for head in args.heads:
        mine = [r for r in rows if r["head"] == head]

        def cell(key: str, metric: str) -> str:
            v = 100 * np.array([r[key].get(metric, np.nan) for r in mine])
            return f"{v.mean():.1f} ± {v.std():.1f}"

        gaps = [(r["adapted"]["mAP"] - r["source_only"]["mAP"]) /
                (r["supervised"]["mAP"] - r["source_only"]["mAP"]) for r in mine if r["supervised"]]
        gap = f"{100 * np.mean(gaps):.0f}% ({', '.join(f'{100 * g:.0f}' for g in gaps)})" if gaps else "n/a"
        src = 100 * np.array([r["source_on_source_mAP"] for r in mine])
        ari = [r["truth_ari"][-1] for r in mine if r["truth_ari"] and r["truth_ari"][-1] is not None]
        lines.append(f"| {head} | {src.mean():.1f} | {cell('source_only', 'mAP')} / {cell('source_only', 'R1')} | "
                     f"{cell('adapted', 'mAP')} / {cell('adapted', 'R1')} | "
                     f"{cell('supervised', 'mAP')} / {cell('supervised', 'R1')} | {gap} | "
                     f"{np.mean([r['adapt_seconds'] for r in mine]):.0f} | "
                     f"{np.mean(ari) if ari else float('nan'):.3f} |")
    text = "\n".join(lines)
    print(text)
    (args.output / f"summary_{args.adapted_name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
