"""Every method of the source documents on one leaderboard: the synthetic benchmark, the demo budget.

Rows (each over --seeds, default 0 1 2):
  bnneck, kae, aacn, pabr            the re-ID heads (bench/heads.py's VARIANTS)
  stripes, stripes+adaptiveL2        AdaptiveReID's model without / with adaptive L2 (ditto)
  generation rows                    reid_entries() of bench/gen_pngan.py, gen_fdgan.py, gen_ipgan.py
                                     (a re-ID model trained with each generator's help); a module
                                     that is missing or fails to import is a "not available" row

Every run has configs/demo.yaml's budget (MobileNetV2 offline weights, 128x64, PK 16x4, 10 epochs,
best checkpoint on validation identities, test split). Runs are cached and resumable: the heads in
runs/heads/seedN/VARIANT (shared with bench/heads.py: test_metrics.json is read, a killed run
resumes), the generation rows in OUTPUT/seedN/ROW (each module caches its own result.json).

    .venv/bin/python bench/leaderboard.py                        # everything, 3 seeds (hours on 2 cores)
    .venv/bin/python bench/leaderboard.py --rows bnneck stripes --seeds 0
    .venv/bin/python bench/leaderboard.py --list

Prints a markdown table: R1 / mAP / mINP as mean ± spread (half the range over seeds), the mean
train seconds, and the per-seed mAP; writes it to OUTPUT/summary.md (+ summary.json).
A benchmark, not a test: a head run takes ~200-250 s on a quiet 2-core machine (stripes ~2.5x).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from heads import VARIANTS, run_one, slug  # noqa: E402  (bench/ is on sys.path)

HEAD_ROWS = ["bnneck", "kae", "aacn", "pabr", "stripes", "stripes+adaptiveL2"]
# row -> the row with everything of it but the method under test (AdaptiveReID: adaptive L2 itself)
HEAD_CONTROLS = {"stripes+adaptiveL2": "stripes"}
GEN_MODULES = ["gen_pngan", "gen_fdgan", "gen_ipgan"]
COLUMNS = ("R1", "mAP", "mINP")


def generation_modules(modules: list[str] = GEN_MODULES) -> tuple[dict[str, Callable], dict[str, str], dict[str, str]]:
    """(row name -> run(seed, data_root, out_dir), row -> its control row from the module's
    reid_controls() if it has one, module -> why it is not available). Imported only when asked
    for, so a broken generation module costs its own rows, not the leaderboard."""
    rows, controls, missing = {}, {}, {}
    for name in modules:
        if not (HERE / f"{name}.py").is_file():
            missing[name] = f"bench/{name}.py does not exist yet"
            continue
        try:
            module = importlib.import_module(name)
            entries = module.reid_entries()
            controls.update(module.reid_controls() if hasattr(module, "reid_controls") else {})
        except Exception as e:  # noqa: BLE001  (any failure of a peer module is reported, not fatal)
            missing[name] = f"bench/{name}.py failed to load: {type(e).__name__}: {e}"
            continue
        for row, fn in entries.items():
            rows[row] = fn
    return rows, controls, missing


def head_row(name: str, seed: int, heads_dir: Path, data_root: Path, overrides: list[str]) -> dict:
    """One head run as a row entry: percent metrics and train seconds."""
    r = run_one(name, seed, heads_dir, data_root, overrides)
    return {**{c: 100 * r[c] for c in COLUMNS}, "train_s": r["train_seconds"]}


def seed_matched(runs: list[dict], base_runs: list[dict]) -> np.ndarray:
    """mAP of each run minus base_runs' on the same seed (rows differ in the seeds they have)."""
    base = {r.get("seed"): r["mAP"] for r in base_runs}
    return np.array([r["mAP"] - base[r.get("seed")] for r in runs if r.get("seed") in base], dtype=float)


def mean_spread(v: np.ndarray, signed: bool = False) -> str:
    """The table's cell: mean ± half the range over seeds (signed for a difference)."""
    return f"{v.mean():{'+' if signed else ''}.1f} ± {(v.max() - v.min()) / 2:.1f}"


def _plural(n: int) -> str:
    return f"{n} seed{'s' if n > 1 else ''}"


def table(per: dict[str, list[dict]], seeds: list[int], failed: dict[str, str],
          controls: Optional[dict[str, str]] = None) -> list[str]:
    lines = ["| method | seeds | " + " | ".join(COLUMNS) + " | train s | mAP per seed |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for name, runs in per.items():
        if not runs:
            continue
        cells = [mean_spread(np.array([r[c] for r in runs], dtype=float)) for c in COLUMNS]
        secs = np.mean([r.get("train_s", np.nan) for r in runs])
        per_seed = ", ".join(f"{r['mAP']:.1f}" for r in runs)
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {secs:.0f} | {per_seed} |")
    for name, why in failed.items():
        lines.append(f"| {name} | - | not available | | | | {why} |")
    lines += ["", f"seeds {seeds}; spread = half the range over seeds; train s = mean training time of a run "
                  "(generation rows: the re-ID run, the generator's own training not included unless the row says so)"]
    if per.get("bnneck"):
        diffs = []
        for name, runs in per.items():
            d = seed_matched(runs, per["bnneck"])
            if d.size and name != "bnneck":
                diffs.append(f"{name} {d.mean():+.1f} ({_plural(d.size)})")
        lines.append("minus bnneck on the same seeds (mAP points): " + ", ".join(diffs))
    # the verdict on a method is its row against its control, seed by seed: the spread of the
    # paired difference, not of either row, says whether the method did anything
    paired = []
    for name, control in (controls or {}).items():
        d = seed_matched(per.get(name, []), per.get(control, []))
        if d.size:
            paired.append(f"| {name} | {control} | {mean_spread(d, signed=True)} | "
                          f"{d.size} | {', '.join(f'{x:+.1f}' for x in d)} |")
    if paired:
        lines += ["", "Each method against its control (the row with everything but the method), seed by seed:", "",
                  "| method | control | mAP minus control | seeds | per seed |", "|---|---|---|---|---|", *paired]
    return lines


def is_cached(name: str, seed: int, heads_dir: Path, output: Path) -> bool:
    """Whether the row's run for this seed is finished (its result is read, nothing trains)."""
    if name in VARIANTS:
        return (heads_dir / f"seed{seed}" / name / "test_metrics.json").is_file()
    return (output / f"seed{seed}" / slug(name) / "result.json").is_file()


def run_leaderboard(rows: Optional[list[str]], seeds: list[int], heads_dir: Path, output: Path,
                    data_root: Path, overrides: list[str], gen_modules: list[str] = GEN_MODULES,
                    cached_only: bool = False) -> str:
    gen, gen_controls, missing = (generation_modules(gen_modules) if rows is None or set(rows) - set(VARIANTS)
                                  else ({}, {}, {}))
    names = rows or [*HEAD_ROWS, *gen]
    failed: dict[str, str] = {}
    if rows is None:
        failed.update({m: why for m, why in missing.items()})
    for name in names:
        if name not in VARIANTS and name not in gen:
            failed[name] = "unknown row (--list shows the rows)" + (
                f"; not available: {', '.join(missing)}" if missing else "")
    runnable = [n for n in names if n not in failed]
    per: dict[str, list[dict]] = {n: [] for n in runnable}
    t0 = time.time()
    for seed in seeds:
        for name in runnable:
            if cached_only and not is_cached(name, seed, heads_dir, output):
                continue
            print(f"[leaderboard] seed {seed} {name}", flush=True)
            try:
                if name in VARIANTS:
                    per[name].append(head_row(name, seed, heads_dir, data_root, overrides) | {"seed": seed})
                else:
                    entry = gen[name](seed, data_root, output / f"seed{seed}" / slug(name))
                    per[name].append({c: float(entry[c]) for c in COLUMNS} | {"seed": seed,
                                     "train_s": float(entry.get("train_s", np.nan))})
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001  (one broken row must not lose the others' hours)
                traceback.print_exc()
                failed[f"{name} (seed {seed})"] = f"{type(e).__name__}: {e}"
    header = (f"wall {(time.time() - t0) / 60:.1f} min; {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} torch threads; data {data_root}")
    text = "\n".join([header, "", *table(per, seeds, failed, {**HEAD_CONTROLS, **gen_controls})])
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.md").write_text(text + "\n")
    (output / "summary.json").write_text(json.dumps({"seeds": seeds, "rows": per, "not_available": failed}, indent=2))
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=None, help="only these rows (default: all)")
    ap.add_argument("--heads-dir", type=Path, default=Path("runs/heads"),
                    help="cache of the head runs (shared with bench/heads.py)")
    ap.add_argument("--output", type=Path, default=Path("runs/leaderboard"),
                    help="generation rows' runs and the summary")
    ap.add_argument("--data-root", type=Path, default=Path("data/synth"))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra key=value for every head run (e.g. optim.epochs=1 for a toy run)")
    ap.add_argument("--list", action="store_true", help="print the rows and exit")
    ap.add_argument("--cached-only", action="store_true",
                    help="train nothing: the table of the runs already finished (seeds column = how many)")
    args = ap.parse_args()
    if args.overrides and args.heads_dir == Path("runs/heads"):
        ap.error("--set changes the runs: give another --heads-dir, so the shared cache runs/heads "
                 "keeps demo-budget runs only")
    if args.list:
        gen, _, missing = generation_modules()
        for name in HEAD_ROWS:
            print(f"{name:22s} {' '.join(VARIANTS[name])}")
        for name in gen:
            print(f"{name:22s} (generation row)")
        for mod, why in missing.items():
            print(f"{mod:22s} not available: {why}")
        return
    print(run_leaderboard(args.rows, args.seeds, args.heads_dir, args.output, args.data_root, args.overrides,
                          cached_only=args.cached_only))


if __name__ == "__main__":
    main()
