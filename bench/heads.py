"""Every head on the demo budget over seeds, with the part heads' ablations as named variants.

configs/demo.yaml (MobileNetV2 offline weights, 128x64, PK 16x4, 10 epochs), best checkpoint on the
validation identities, test split of the synthetic benchmark. Prints one table (R1 / mAP / mINP
mean ± spread over seeds, train s) and the per-seed mAP. A finished run (test_metrics.json in its
folder) is read, not retrained, and a killed one resumes, so the script can be stopped and rerun.

    .venv/bin/python bench/heads.py --seeds 0 1 2 --variants bnneck kae aacn pabr
    .venv/bin/python bench/heads.py --seeds 0 --variants pabr_unscaled pabr_global ...   # ablations
    .venv/bin/python bench/heads.py --list

A benchmark, not a test: each run takes ~200 s on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from keyreid.config import load_config
from keyreid.demo.run import DEMO_CONFIG, train_and_test

# name -> overrides of configs/demo.yaml. The plain head names are each head's defaults, i.e. what
# a user gets by switching model.head; the other names change one thing of that default.
VARIANTS: dict[str, list[str]] = {
    "bnneck": ["model.head=bnneck"],
    "kae": ["model.head=kae"],
    "aacn": ["model.head=aacn"],
    "pabr": ["model.head=pabr"],
    # AdaptiveReID's model (configs/base/adaptivereid.yaml): global + 2 stripes on copies of the
    # last stage, features clipped to [0, 1], pre-BN retrieval (the head's defaults), the authors'
    # soft-margin triplet; their 20 frozen epochs do not fit the 10-epoch budget (demo: none)
    "stripes": ["model.head=stripes", "loss.margin=null"],
    "stripes+adaptiveL2": ["model.head=stripes", "loss.margin=null", "regularizer.adaptive_l2=true"],
    # PABR. The default after issue 11 has 128 appearance channels; pabr_64 is the session-3 default
    # (64 channels) and the names below change one thing of it. pabr_old: the head before issue 11
    # (unit-norm descriptor, so a triplet margin of 0.3 was the whole spread of distances; map
    # predictor with the ReLU init, map loss ~8 at the start)
    "pabr_64": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true}"],
    "pabr_old": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true, feature_scale: 1.0, map_init_std: null}"],
    "pabr_unscaled": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true, feature_scale: 1.0}"],
    "pabr_kaiming_init": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true, map_init_std: null}"],
    "pabr_no_sqrt": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: false}"],
    "pabr_global": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true, global_part: true}"],
    "pabr_pose4": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true, pose_epochs: 4}"],
    "pabr_wide": ["model.head=pabr", "model.head_options={signed_sqrt: true, appearance_channels: 128}"],
    "pabr_wide256": ["model.head=pabr", "model.head_options={signed_sqrt: true, appearance_channels: 256}"],
    "pabr_margin_soft": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true}", "loss.margin=null"],
    # AACN. Issue 11 made the default a global stream as wide as the backbone (1,280 here) and the
    # part-map losses weighted 0.1 (aacn_gw_maps_light); aacn_global256 is the old default (256,
    # weight 1.0) and the first-round names below change one thing of it; the aacn_gw_* names
    # change one thing of aacn_global_wide (1,280, weight 1.0)
    "aacn_global256": ["model.head=aacn", "model.head_options={global_channels: 256, map_loss_weight: 1.0}"],
    "aacn_small_init": ["model.head=aacn", "model.head_options={global_channels: 256, map_init_std: 0.001, map_loss_weight: 1.0}"],
    "aacn_maps_light": ["model.head=aacn", "model.head_options={global_channels: 256, map_loss_weight: 0.1}"],
    "aacn_no_visibility": ["model.head=aacn", "model.head_options={global_channels: 256, visibility_weighting: false, map_loss_weight: 1.0}"],
    "aacn_global_wide": ["model.head=aacn", "model.head_options={global_channels: 1280, map_loss_weight: 1.0}"],
    "aacn_parts_narrow": ["model.head=aacn", "model.head_options={global_channels: 256, part_channels: 16, map_loss_weight: 1.0}"],
    "aacn_detached": ["model.head=aacn", "model.head_options={global_channels: 256, detach_attention: true, map_loss_weight: 1.0}"],
    "aacn_per_part": ["model.head=aacn", "model.head_options={global_channels: 256, part_stream: per_part, map_loss_weight: 1.0}"],
    # issue 11 ablations, second round. PABR: one change of the default each
    "pabr_no_l2": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true, l2_normalize: false}"],
    "pabr_compact": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true, compact_dim: 512}"],
    "pabr_head_lr10": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true}", "optim.head_lr_factor=10"],
    "pabr_pose_heavy": ["model.head=pabr", "model.head_options={appearance_channels: 64, signed_sqrt: true}", "loss.heatmap_weight=10"],
    # AACN with the global stream as wide as the backbone (aacn_global_wide), then one change each
    "aacn_gw_maps_light": ["model.head=aacn", "model.head_options={global_channels: 1280, map_loss_weight: 0.1}"],
    "aacn_gw_no_visibility": ["model.head=aacn",
                              "model.head_options={global_channels: 1280, visibility_weighting: false, map_loss_weight: 1.0}"],
    "aacn_gw_no_maxnorm": ["model.head=aacn", "model.head_options={global_channels: 1280, max_normalize: false, map_loss_weight: 1.0}"],
    "aacn_gw_parts_narrow": ["model.head=aacn", "model.head_options={global_channels: 1280, part_channels: 16, map_loss_weight: 1.0}"],
    "aacn_gw_head_lr10": ["model.head=aacn", "model.head_options={global_channels: 1280, map_loss_weight: 1.0}",
                          "optim.head_lr_factor=10"],
    "aacn_gw_per_part": ["model.head=aacn", "model.head_options={global_channels: 1280, part_stream: per_part, map_loss_weight: 1.0}"],
    # and one change of the issue-11 default (1,280, map losses x0.1)
    "aacn_parts_wide": ["model.head=aacn", "model.head_options={part_channels: 128}"],
    "aacn_keypoint_light": ["model.head=aacn", "loss.heatmap_weight=0.1"],
    "aacn_gw_detached": ["model.head=aacn", "model.head_options={global_channels: 1280, detach_attention: true, map_loss_weight: 1.0}"],
}


def run_one(name: str, seed: int, output: Path, data_root: Path, extra: list[str]) -> dict:
    out = output / f"seed{seed}" / name
    done = out / "test_metrics.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        return {**saved["metrics"], "train_seconds": saved["train_seconds"]}
    cfg = load_config(DEMO_CONFIG, [*VARIANTS[name], f"data.root={data_root}", f"seed={seed}",
                                    f"output_dir={out}", f"name={name}", *extra])
    result, _, _ = train_and_test(name, cfg)
    return {**result.metrics, "train_seconds": result.train_seconds}


def table(per: dict[str, list[dict]], seeds: list[int]) -> list[str]:
    cols = ("R1", "mAP", "mINP")
    lines = ["| variant | seeds | " + " | ".join(cols) + " | train s |", "|---" * (len(cols) + 3) + "|"]
    for name, runs in per.items():
        if not runs:
            continue
        cells = []
        for c in cols:
            v = 100 * np.array([r[c] for r in runs])
            # spread: half the range over seeds (0 with one seed)
            cells.append(f"{v.mean():.1f} ± {(v.max() - v.min()) / 2:.1f}")
        secs = np.mean([r["train_seconds"] for r in runs])
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {secs:.0f} |")
    lines += ["", "per seed (mAP %, seeds " + ", ".join(map(str, seeds)) + "): " + "; ".join(
        f"{name} " + ", ".join(f"{100 * r['mAP']:.1f}" for r in runs) for name, runs in per.items() if runs)]
    if per.get("bnneck"):
        base = np.mean([r["mAP"] for r in per["bnneck"]])
        lines.append("minus bnneck (mAP points): " + ", ".join(
            f"{name} {100 * (np.mean([r['mAP'] for r in runs]) - base):+.1f}"
            for name, runs in per.items() if runs and name != "bnneck"))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["bnneck", "kae", "aacn", "pabr"])
    ap.add_argument("--output", type=Path, default=Path("runs/heads"))
    ap.add_argument("--data-root", type=Path, default=Path("data/synth"))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra key=value for every run (e.g. eval.every=1 for per-epoch curves)")
    ap.add_argument("--list", action="store_true", help="print the variants and exit")
    args = ap.parse_args()
    if args.list:
        for name, ov in VARIANTS.items():
            print(f"{name:22s} {' '.join(ov)}")
        return
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; --list shows them")
    t0 = time.time()
    per: dict[str, list[dict]] = {name: [] for name in args.variants}
    for seed in args.seeds:
        for name in args.variants:
            per[name].append(run_one(name, seed, args.output, args.data_root, args.overrides))
    text = "\n".join([f"seeds {args.seeds}; wall {(time.time() - t0) / 60:.1f} min; "
                      f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
                      "", *table(per, args.seeds)])
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "summary.md").write_text(text + "\n")
    (args.output / "summary.json").write_text(json.dumps(per, indent=2))


if __name__ == "__main__":
    main()
