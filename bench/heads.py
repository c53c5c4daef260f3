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
# a user gets by switching model.head; the other names change one thing of a base named beside them.
def _yaml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def head(name: str, options: dict | None = None, *extra: str) -> list[str]:
    """Overrides selecting head `name` with these head_options (a YAML flow map) and extra keys."""
    out = [f"model.head={name}"]
    if options:
        out.append("model.head_options={" + ", ".join(f"{k}: {_yaml(v)}" for k, v in options.items()) + "}")
    return out + list(extra)


# PABR's session-3 default (64 appearance channels; the default after issue 11 has 128)
PABR_64 = {"appearance_channels": 64, "signed_sqrt": True}
# AACN's default before issue 11 (global stream 256, part-map losses x1.0), and with the global
# stream as wide as the backbone (1,280 here); the default after issue 11 is 1,280 with x0.1
AACN_256 = {"global_channels": 256, "map_loss_weight": 1.0}
AACN_GW = {"global_channels": 1280, "map_loss_weight": 1.0}

VARIANTS: dict[str, list[str]] = {
    "bnneck": head("bnneck"),
    "kae": head("kae"),
    "aacn": head("aacn"),
    "pabr": head("pabr"),
    # AdaptiveReID's model (configs/base/adaptivereid.yaml): global + 2 stripes on copies of the
    # last stage, features clipped to [0, 1], pre-BN retrieval (the head's defaults), the authors'
    # soft-margin triplet; their 20 frozen epochs do not fit the 10-epoch budget (demo: none)
    "stripes": head("stripes", None, "loss.margin=null"),
    "stripes+adaptiveL2": head("stripes", None, "loss.margin=null", "regularizer.adaptive_l2=true"),
    # PABR: one change of PABR_64 each. pabr_old: the head before issue 11 (unit-norm descriptor, so
    # a triplet margin of 0.3 was the whole spread of distances; map predictor with the ReLU init,
    # map loss ~8 at the start)
    "pabr_64": head("pabr", PABR_64),
    "pabr_old": head("pabr", {**PABR_64, "feature_scale": 1.0, "map_init_std": None}),
    "pabr_unscaled": head("pabr", {**PABR_64, "feature_scale": 1.0}),
    "pabr_kaiming_init": head("pabr", {**PABR_64, "map_init_std": None}),
    "pabr_no_sqrt": head("pabr", {**PABR_64, "signed_sqrt": False}),
    "pabr_global": head("pabr", {**PABR_64, "global_part": True}),
    "pabr_pose4": head("pabr", {**PABR_64, "pose_epochs": 4}),
    "pabr_wide": head("pabr", {**PABR_64, "appearance_channels": 128}),
    "pabr_wide256": head("pabr", {**PABR_64, "appearance_channels": 256}),
    "pabr_margin_soft": head("pabr", PABR_64, "loss.margin=null"),
    "pabr_no_l2": head("pabr", {**PABR_64, "l2_normalize": False}),
    "pabr_compact": head("pabr", {**PABR_64, "compact_dim": 512}),
    "pabr_head_lr10": head("pabr", PABR_64, "optim.head_lr_factor=10"),
    "pabr_pose_heavy": head("pabr", PABR_64, "loss.heatmap_weight=10"),
    # AACN, first round: one change of AACN_256 each
    "aacn_global256": head("aacn", AACN_256),
    "aacn_small_init": head("aacn", {**AACN_256, "map_init_std": 0.001}),
    "aacn_maps_light": head("aacn", {**AACN_256, "map_loss_weight": 0.1}),
    "aacn_no_visibility": head("aacn", {**AACN_256, "visibility_weighting": False}),
    "aacn_global_wide": head("aacn", AACN_GW),
    "aacn_parts_narrow": head("aacn", {**AACN_256, "part_channels": 16}),
    "aacn_detached": head("aacn", {**AACN_256, "detach_attention": True}),
    "aacn_per_part": head("aacn", {**AACN_256, "part_stream": "per_part"}),
    # second round: one change of AACN_GW each (aacn_gw_maps_light became the default)
    "aacn_gw_maps_light": head("aacn", {**AACN_GW, "map_loss_weight": 0.1}),
    "aacn_gw_no_visibility": head("aacn", {**AACN_GW, "visibility_weighting": False}),
    "aacn_gw_no_maxnorm": head("aacn", {**AACN_GW, "max_normalize": False}),
    "aacn_gw_parts_narrow": head("aacn", {**AACN_GW, "part_channels": 16}),
    "aacn_gw_head_lr10": head("aacn", AACN_GW, "optim.head_lr_factor=10"),
    "aacn_gw_per_part": head("aacn", {**AACN_GW, "part_stream": "per_part"}),
    "aacn_gw_detached": head("aacn", {**AACN_GW, "detach_attention": True}),
    # third: one change of the issue-11 default
    "aacn_parts_wide": head("aacn", {"part_channels": 128}),
    "aacn_keypoint_light": head("aacn", None, "loss.heatmap_weight=0.1"),
}

DEFAULT_DATA = Path("data/synth")
CACHE = Path("runs/heads")


def slug(name: str) -> str:
    """A leaderboard row's folder name (bench/leaderboard.py's cache, bench/gen_pngan.py's rows)."""
    return "".join(ch if ch.isalnum() or ch in "+-_." else "_" for ch in name)


def cache_dir(data_root: Path) -> Path:
    """Where the demo-budget runs on data_root are cached (shared with bench/leaderboard.py and the
    generation benchmarks): runs/heads for the default benchmark, runs/heads/data_NAME otherwise."""
    return CACHE if Path(data_root) == DEFAULT_DATA else CACHE / f"data_{Path(data_root).name}"


def demo_checkpoints(seed: int, data_root: Path, names: tuple[str, ...] = ("kae", "bnneck")) -> dict[str, Path]:
    """best.pt of each demo-budget run in `names` on data_root (cache_dir), trained if missing."""
    out = cache_dir(data_root)
    for name in names:
        run_one(name, seed, out, Path(data_root), [])
    return {name: out / f"seed{seed}" / name / "best.pt" for name in names}


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
