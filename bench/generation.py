"""Each generation method at demo scale on CPU, measured against the synthetic ground truth.

Calls quality(seed, data_root, out_dir) of bench/gen_pngan.py, gen_fdgan.py and gen_ipgan.py (each
trains its method on its *_demo.yaml, cached and resumable, and measures pose transfer with
keyreid.generation.metrics), then prints one markdown table (L1 / SSIM against the true image, in
the whole image and inside the person; L1 against the source; PCK of a kae keypoint probe against
the target and the source pose; identity rank-1 against the real gallery; train s) with the control
(the unchanged source image) and the ceiling (the true image), copies each method's sample grid to
docs/generation/<method>.png, and prints the demo-budget kae / bnneck re-ID numbers beside
(runs/heads, bench/heads.py's cache).

    .venv/bin/python bench/generation.py                 # all three, seed 0
    .venv/bin/python bench/generation.py --methods pngan --no-docs

A benchmark, not a test: each method trains for minutes to tens of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from keyreid.demo.generation import quality_table  # noqa: E402

METHODS = ("pngan", "fdgan", "ipgan")


def _get(d: dict, *path):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def normalize_quality(numbers: dict) -> dict:
    """evaluate_transfer's flat keys from a module's quality() numbers. Flat numbers pass through;
    IP-GAN's nested swap measurements (generation/ipgan_eval.measure_swaps) are mapped to the same
    meaning where one exists (identity image = source, attribute image = target), the rest n/a."""
    if "l1_gt" in numbers:
        return dict(numbers)
    out = {k: numbers[k] for k in ("train_s", "train_seconds", "pairs") if k in numbers}
    mapping = {
        "l1_gt": ("full_l1", "generated vs ground truth"),
        "l1_gt_masked": ("person_l1", "generated"),
        "l1_source": ("full_l1", "generated vs identity image"),
        "ssim_gt": ("full_ssim", "generated vs ground truth"),
        "ssim_gt_masked": ("person_ssim", "generated"),
        "pck_target": ("keypoints", "pck vs attribute image"),
        "pck_source": ("keypoints", "pck vs identity image"),
        "id_rank1": ("identity", "rank1 identity image's id"),
        "control_l1_gt_masked": ("person_l1", "identity image (control)"),
        "control_ssim_gt_masked": ("person_ssim", "identity image (control)"),
        "gt_pck_target": ("keypoints", "probe on real attribute images (ceiling), pck"),
        "gt_id_rank1": ("identity", "rank1 of the real identity images (ceiling)"),
    }
    for key, path in mapping.items():
        value = _get(numbers, *path)
        if value is not None:
            out[key] = float(value)
    return out


def reid_numbers(heads: Path, seed: int) -> list[str]:
    lines = []
    for name in ("bnneck", "kae"):
        path = heads / f"seed{seed}" / name / "test_metrics.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            m = saved["metrics"]
            lines.append(f"| {name} | {100 * m['R1']:.1f} | {100 * m['mAP']:.1f} | {100 * m['mINP']:.1f} | "
                         f"{saved['train_seconds']:.0f} |")
        else:
            lines.append(f"| {name} | not run yet (bench/heads.py --seeds {seed} --variants {name}) | | | |")
    return ["| demo re-ID model | R1 | mAP | mINP | train s |", "|---|---|---|---|---|", *lines]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--data-root", type=Path, default=Path("data/synth"))
    ap.add_argument("--output", type=Path, default=Path("runs/bench/generation"))
    ap.add_argument("--heads", type=Path, default=Path("runs/heads"), help="bench/heads.py's cache (kae, bnneck)")
    ap.add_argument("--docs", type=Path, default=Path("docs/generation"), help="where the grids are copied")
    ap.add_argument("--no-docs", action="store_true", help="do not copy the grids")
    args = ap.parse_args()
    t0 = time.time()
    results, problems, grids = {}, {}, {}
    for method in args.methods:
        name = f"gen_{method}"
        if not (HERE / f"{name}.py").is_file():
            problems[method] = f"bench/{name}.py does not exist yet"
            continue
        try:
            numbers = importlib.import_module(name).quality(args.seed, args.data_root,
                                                            args.output / f"seed{args.seed}" / method)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001  (one method's failure must not lose the others)
            traceback.print_exc()
            problems[method] = f"{type(e).__name__}: {e}"
            continue
        flat = normalize_quality(numbers)
        if "train_seconds" not in flat and "train_s" in flat:
            flat["train_seconds"] = flat["train_s"]
        results[method] = flat
        if numbers.get("grid") and Path(numbers["grid"]).is_file():
            grids[method] = Path(numbers["grid"])
            if not args.no_docs:
                args.docs.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(grids[method], args.docs / f"{method}.png")
                grids[method] = args.docs / f"{method}.png"
        print(f"[generation] {method}: {json.dumps(flat)}", flush=True)
    lines = [f"seed {args.seed}; wall {(time.time() - t0) / 60:.1f} min; "
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
             f"data {args.data_root}", "", quality_table(results).rstrip("\n")]
    lines += [f"| {m} | not available: {why} |" + " |" * 8 for m, why in problems.items()]
    lines += ["", "L1 / SSIM on the 0..1 scale, (mask): inside the true person mask; PCK at 0.1 of the target's "
              "visible-keypoint box height; control = the unchanged source image, ceiling = the true image.", "",
              *reid_numbers(args.heads, args.seed)]
    if grids:
        lines += ["", "grids: " + ", ".join(f"{m} {p}" for m, p in grids.items())]
    text = "\n".join(lines)
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"summary_seed{args.seed}.md").write_text(text + "\n")
    (args.output / f"summary_seed{args.seed}.json").write_text(
        json.dumps({"results": results, "not_available": problems}, indent=2))


if __name__ == "__main__":
    main()
