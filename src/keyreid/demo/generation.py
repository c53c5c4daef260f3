"""`keyreid demo --suite generation`: each generation method at demo scale, measured against the
synthetic ground truth, with sample grids and a report.

Steps (each resumes or is read when already done, so a killed suite picks up where it stopped):
1. the synthetic benchmark (made as the default demo makes it);
2. the default demo's kae run (OUTPUT/seedS/kae/best.pt, reused when `keyreid demo` made it,
   trained otherwise): the keypoint probe of the measurements and IP-GAN's identity encoder;
   and its bnneck run (OUTPUT/seedS/bnneck): the identity judge, a model no generator trained
   with, so identity preservation is not judged by the generator's own encoder;
3. each method's configs/generation/<method>_demo.yaml, with GEN_DEMO_BUDGET's overrides that
   keep the whole suite under 30 minutes on 2 cores (OUTPUT/seedS/generation/<method>);
4. generation.metrics.evaluate_transfer on TRANSFER_PAIRS cross-identity pairs of the test split
   (source: a query image; target: another identity's test image; truth: SynthScenes.transfer),
   one table and a grid per method, and OUTPUT/seedS/generation/report.md.

This module is the thin wiring of functions in keyreid (bench/generation.py measures the same
methods through each method's own bench hook); it imports nothing from bench/.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from rich.console import Console

from keyreid.config import load_config
from keyreid.demo.run import DEMO_CONFIG, DEMO_RUNS, ensure_synthetic, train_and_test
from keyreid.utils.io import atomic_write, atomic_write_text

console = Console()

GEN_METHODS = ("pngan", "fdgan", "ipgan")
GEN_CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "generation"
# per method: overrides of its <method>_demo.yaml so that the whole suite stays under 30 minutes on
# 2 cores. Measured single-thread CPU seconds per training pair (no loader workers, 2026-11-23):
# PN-GAN 0.13; IP-GAN 0.039; FD-GAN stage I 0.05, stage II 0.19, stage III 0.5 (small runs, so
# per-epoch overhead included). Each budget below is ~7 single-core minutes (PN-GAN 2 + 2 epochs
# of 800 pairs: 3,200 pairs; IP-GAN 3 + 2 epochs of every training image: ~11,900; FD-GAN stage I
# 4 epochs of 1,200, II 1 + 1 and III 1 + 1 epochs of 160), about a third of each *_demo.yaml
# (bench/generation.py trains those), plus kae and bnneck (~7 min when `keyreid demo` has not
# made them) and ~2 min of measuring.
GEN_DEMO_BUDGET: dict[str, list[str]] = {
    "pngan": ["optim.epochs=2", "optim.decay_epochs=2", "data.max_pairs_per_epoch=800"],
    "fdgan": ["method_options.stage1_epochs=4", "method_options.stage1_step=3", "method_options.stage2_epochs=1",
              "method_options.stage2_decay_epochs=1", "method_options.stage3_epochs=1",
              "method_options.stage3_decay_epochs=1", "method_options.gan_pairs_per_epoch=160"],
    "ipgan": ["optim.epochs=3", "optim.decay_epochs=2"],
}
TRANSFER_PAIRS = 200
GRID_ROWS = 8


@dataclass
class GenerationResult:
    method: str
    numbers: dict                    # evaluate_transfer's numbers (+ train_seconds)
    grid: Optional[Path] = None
    checkpoint: Optional[Path] = None
    problem: Optional[str] = None    # why the method has no numbers (not available, failed)
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------- steps
def demo_reid_run(name: str, output: Path, data_root: Path, seed: int, overrides: Sequence[str] = ()) -> Path:
    """best.pt of the default demo's run `name` (kae, bnneck) at OUTPUT/seedS/NAME: read when
    finished, trained (or resumed) with the default demo's exact config otherwise."""
    run_dir = output / f"seed{seed}" / name.replace("+", "_")
    best = run_dir / "best.pt"
    if best.is_file() and (run_dir / "test_metrics.json").is_file():
        console.print(f"{name}: reusing {best}")
        return best
    cfg = load_config(DEMO_CONFIG, [*DEMO_RUNS[name], f"data.root={data_root}", f"seed={seed}",
                                    f"output_dir={run_dir}", f"name={name}", *overrides])
    console.rule(f"[bold]{name} (for the generation suite)")
    train_and_test(name, cfg)
    return best


def trained_seconds(out: Path) -> Optional[float]:
    """Sum of the trainer's per-epoch seconds (OUT/metrics.csv), across resumes; None without a log."""
    import csv

    log = out / "metrics.csv"
    if not log.is_file():
        return None
    with log.open(newline="") as f:
        secs = [float(r["seconds"]) for r in csv.DictReader(f) if r.get("seconds")]
    return sum(secs) if secs else None


def train_generator(method: str, out: Path, data_root: Path, seed: int, reid_checkpoint: Path,
                    overrides: Sequence[str] = (), show_progress: bool = True) -> tuple[Path, float]:
    """(OUT/last.pt, training seconds) of `method` on its demo config at the demo budget; a
    finished run trains nothing, a killed one resumes (the trainer refuses a changed config)."""
    from keyreid.generation.config import load_gen_config
    from keyreid.generation.trainer import GanTrainer

    cfg = load_gen_config(GEN_CONFIG_DIR / f"{method}_demo.yaml",
                          [*GEN_DEMO_BUDGET.get(method, []), f"seed={seed}", f"data.root={data_root}",
                           f"output_dir={out}", f"reid_checkpoint={reid_checkpoint}", *overrides])
    console.rule(f"[bold]{method}")
    t0 = time.time()
    GanTrainer(cfg, resume=True, show_progress=show_progress).fit()
    seconds = trained_seconds(out)
    return out / "last.pt", time.time() - t0 if seconds is None else seconds


def save_transfer_grid(path: Path, scenes, pairs: Sequence[tuple[str, str]], generated: np.ndarray,
                       rows: int = GRID_ROWS) -> Path:
    """PNG: one row per pair: source | target image | target pose | generated | ground truth."""
    from PIL import Image, ImageDraw

    from keyreid.data.keypoints import COCO17
    from keyreid.generation.pose import pose_skeleton, skeleton_image

    skeleton, to_generation = pose_skeleton(COCO17)
    columns = ("source", "target", "pose", "generated", "truth")
    n = min(rows, len(pairs))
    h, w = generated.shape[1:3]
    gap, top = 2, 12
    canvas = np.full((top + n * (h + gap), len(columns) * (w + gap) - gap, 3), 255, np.uint8)
    for i, (s, t) in enumerate(pairs[:n]):
        truth = scenes.transfer(s, t)
        cells = (scenes.render(s).image, scenes.render(t).image,
                 skeleton_image(to_generation(truth.keypoints), skeleton, h, w), generated[i], truth.image)
        for j, cell in enumerate(cells):
            y, x = top + i * (h + gap), j * (w + gap)
            canvas[y:y + h, x:x + w] = cell
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for j, name in enumerate(columns):
        draw.text((j * (w + gap) + 2, 0), name, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


# ---------------------------------------------------------------------------------- table
QUALITY_COLUMNS = ("method", "L1 vs GT", "L1 vs GT (mask)", "L1 vs source", "SSIM vs GT", "SSIM vs GT (mask)",
                   "PCK vs target %", "PCK vs source %", "identity R1 %", "train s")


def _fmt(value, scale: float = 1.0, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{scale * float(value):.{digits}f}"


def quality_rows(results: dict[str, dict]) -> list[list[str]]:
    """Table rows of evaluate_transfer numbers per method, then the control (the source image
    itself) and the ceiling (the true image) of the first method that has them."""
    def row(name: str, r: dict) -> list[str]:
        secs = r.get("train_seconds")
        return [name, _fmt(r.get("l1_gt")), _fmt(r.get("l1_gt_masked")), _fmt(r.get("l1_source")),
                _fmt(r.get("ssim_gt")), _fmt(r.get("ssim_gt_masked")), _fmt(r.get("pck_target"), 100, 1),
                _fmt(r.get("pck_source"), 100, 1), _fmt(r.get("id_rank1"), 100, 1),
                "" if secs is None else _fmt(secs, 1, 0)]

    rows = [row(name, r) for name, r in results.items()]
    ref = next((r for r in results.values() if "control_l1_gt" in r), None)
    if ref is not None:
        keys = ("l1_gt", "l1_gt_masked", "ssim_gt", "ssim_gt_masked", "pck_target", "pck_source", "id_rank1")
        control = {k: ref.get(f"control_{k}") for k in keys} | {"l1_source": 0.0}
        truth = {"l1_gt": 0.0, "l1_gt_masked": 0.0, "ssim_gt": 1.0, "ssim_gt_masked": 1.0,
                 "l1_source": ref["control_l1_gt"], "pck_target": ref.get("gt_pck_target"),
                 "pck_source": ref.get("gt_pck_source"), "id_rank1": ref.get("gt_id_rank1")}
        rows += [row("source image (control)", control), row("true image (ceiling)", truth)]
    return rows


def quality_table(results: dict[str, dict]) -> str:
    from keyreid.viz.report import markdown_table

    return markdown_table(QUALITY_COLUMNS, quality_rows(results))


# ---------------------------------------------------------------------------------- the suite
def _reid_numbers(output: Path, seed: int) -> dict[str, dict]:
    out = {}
    for name in ("bnneck", "kae"):
        path = output / f"seed{seed}" / name / "test_metrics.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            out[name] = {**saved["metrics"], "train_seconds": saved["train_seconds"]}
    return out


def run_generation_demo(output: Path = Path("runs/demo"), data_root: Path = Path("data/synth"), seed: int = 0,
                        overrides: Sequence[str] = (), methods: Optional[Sequence[str]] = None,
                        gen_overrides: Sequence[str] = (), pairs: int = TRANSFER_PAIRS, report: bool = True,
                        show_progress: bool = True,
                        train: Callable[..., tuple[Path, float]] = train_generator,
                        load: Optional[Callable] = None) -> list[GenerationResult]:
    """The suite (module docstring). `overrides` go to the kae / bnneck runs (like `keyreid demo
    --set`), `gen_overrides` to every generation method; `train` (train_generator's signature)
    and `load` (checkpoint -> (method, config), default generation.trainer.load_generator) are
    the seams a test can replace."""
    from keyreid.data.synthetic.paired import SynthScenes
    from keyreid.errors import KeyreidError
    from keyreid.generation.metrics import IdentityJudge, KeypointProbe, evaluate_transfer, transfer_pairs

    unknown = [m for m in methods or () if m not in GEN_METHODS]
    if unknown:
        raise KeyreidError(f"--run: unknown generation method(s) {', '.join(unknown)}; one of {', '.join(GEN_METHODS)}")
    if load is None:
        from keyreid.generation.trainer import load_generator as load
    t_start = time.time()
    ensure_synthetic(data_root)
    kae = demo_reid_run("kae", output, data_root, seed, overrides)
    bnneck = demo_reid_run("bnneck", output, data_root, seed, overrides)
    gen_dir = output / f"seed{seed}" / "generation"
    scenes = SynthScenes(data_root)
    chosen = transfer_pairs(scenes, pairs, seed)
    probe = KeypointProbe(kae)
    judge = IdentityJudge.for_dataset(bnneck, data_root)
    results = []
    for method in methods or GEN_METHODS:
        out = gen_dir / method
        done = out / "demo_quality.json"
        if done.is_file():
            saved = json.loads(done.read_text())
            results.append(GenerationResult(method, saved["numbers"], Path(saved["grid"]), Path(saved["checkpoint"])))
            console.print(f"{method}: reusing {done}")
            continue
        if not (GEN_CONFIG_DIR / f"{method}_demo.yaml").is_file():
            results.append(GenerationResult(method, {}, problem=f"configs/generation/{method}_demo.yaml does not exist"))
            continue
        ckpt, seconds = train(method, out, data_root, seed, kae, gen_overrides, show_progress)
        gen_method, _ = load(ckpt)
        t0 = time.time()
        numbers = evaluate_transfer(gen_method, scenes, chosen, probe, judge, return_images=True)
        generated = numbers.pop("generated")
        numbers["train_seconds"], numbers["eval_seconds"] = seconds, time.time() - t0
        grid = save_transfer_grid(gen_dir / "figures" / f"{method}.png", scenes, chosen, generated)
        atomic_write_text(done, json.dumps({"numbers": numbers, "grid": str(grid), "checkpoint": str(ckpt)}, indent=2))
        results.append(GenerationResult(method, numbers, grid, ckpt))
    table = quality_table({r.method: r.numbers for r in results if r.numbers})
    console.print(table)
    summary = {r.method: r.numbers if r.numbers else {"problem": r.problem} for r in results}
    atomic_write_text(gen_dir / "results.json", json.dumps(summary, indent=2))
    if report:
        path = write_generation_report(gen_dir, results, _reid_numbers(output, seed), len(chosen), kae, bnneck,
                                       time.time() - t_start)
        console.print(f"report: {path}")
    return results


def _verdict(results: list[GenerationResult]) -> str:
    lines = []
    for r in results:
        n = r.numbers
        if not n:
            lines.append(f"- {r.method}: no numbers ({r.problem}).")
            continue
        parts = [f"inside the person, L1 to the truth {n['l1_gt_masked']:.3f} against the unchanged source's "
                 f"{n['control_l1_gt_masked']:.3f} (lower is better), SSIM {n['ssim_gt_masked']:.3f} against "
                 f"{n['control_ssim_gt_masked']:.3f}"]
        if not math.isnan(n.get("pck_target", math.nan)):
            diff = 100 * (n['pck_target'] - n['control_pck_target'])
            parts.append(f"the probe finds the target pose on {100 * n['pck_target']:.0f}% of the joints, "
                         f"{abs(diff):.0f} points {'above' if diff >= 0 else 'below'} the source image's "
                         f"{100 * n['control_pck_target']:.0f}% (the true image: {100 * n['gt_pck_target']:.0f}%)")
        if not math.isnan(n.get("id_rank1", math.nan)):
            parts.append(f"identity rank-1 {100 * n['id_rank1']:.0f}% (source image "
                         f"{100 * n['control_id_rank1']:.0f}%, true image {100 * n['gt_id_rank1']:.0f}%)")
        lines.append(f"- {r.method}: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def write_generation_report(gen_dir: Path, results: list[GenerationResult], reid: dict[str, dict], pairs: int,
                            probe_ckpt: Path, judge_ckpt: Path, wall_seconds: float) -> Path:
    from keyreid.viz.report import markdown_table, write_markdown_report

    setup = (f"Pose transfer on {pairs} pairs of the synthetic test split: the source is a query image, the "
             "target a test image of another identity, the truth the source person re-rendered in the "
             "target's pose geometry on the source's background and camera (SynthScenes.transfer). "
             "Each method gets the source image, the target keypoints (OpenPose-18) and the target image "
             "(IP-GAN takes pose and background from it; the others ignore it). "
             f"Keypoint probe: the demo's kae model ({probe_ckpt}); PCK at 0.1 of the height of the target's "
             "visible-keypoint box. Identity judge: the demo's bnneck model "
             f"({judge_ckpt}), which no generator trains with: rank-1 of each image against the real "
             "gallery, same-identity same-camera gallery images left out. L1 and SSIM on the 0..1 scale; "
             "(mask): inside the true person mask. Generators are trained at the demo budget "
             "(configs/generation/<method>_demo.yaml + keyreid.demo.generation.GEN_DEMO_BUDGET); "
             f"the suite took {wall_seconds / 60:.1f} min of wall time in this call.")
    sections = [("Setup", setup),
                ("Pose transfer against the truth", quality_table({r.method: r.numbers for r in results if r.numbers})),
                ("What happened", _verdict(results) or "No method ran.")]
    if reid:
        rows = [[name, f"{100 * m['R1']:.1f}", f"{100 * m['mAP']:.1f}", f"{100 * m['mINP']:.1f}",
                 f"{m['train_seconds']:.0f}"] for name, m in reid.items()]
        sections.append(("Re-ID models of the default demo (test split, %)",
                         markdown_table(["model", "R1", "mAP", "mINP", "train s"], rows)))
    for r in results:
        if r.grid is not None:
            sections.append((f"Samples ({r.method})", "Columns: source, target image, target pose, generated, "
                             "truth. Rows: the first pairs measured.", [r.grid]))
    return write_markdown_report(gen_dir / "report.md", "keyreid generation demo", sections)


__all__ = ["GEN_DEMO_BUDGET", "GEN_METHODS", "GenerationResult", "quality_table", "run_generation_demo",
           "save_transfer_grid", "train_generator"]
