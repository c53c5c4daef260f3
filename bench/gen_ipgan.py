"""IP-GAN at demo scale: swap measurements and generated images as re-ID augmentation.

    .venv/bin/python bench/gen_ipgan.py --seed 0            # both, prints JSON
    .venv/bin/python bench/gen_ipgan.py --seed 0 --only quality

Needs (trained on the way if missing, cached under runs/heads like bench/heads.py):
  runs/heads/seed<seed>/kae/best.pt     identity encoder of IP-GAN and the keypoint probe
  runs/heads/seed<seed>/bnneck/best.pt  the re-ID judge of identity (not the encoder: see
                                        generation/ipgan_eval.py) and the "none" augmentation row
The GAN itself: configs/generation/ipgan_demo.yaml, trained once per seed in
runs/generation/ipgan_demo/seed<seed> (a killed run resumes); quality() and the augmentation row
share it.

reid_entries()["ipgan augmentation"]: the demo's bnneck run (configs/demo.yaml, same budget: 10
epochs) on the training split plus one IP-GAN swap per training image (identity of that image,
pose / background / camera of a random training image of another identity; the validation
identities excluded from both sides). Its epochs see twice the images, so it also has twice the
steps of the "none" row (bench/heads.py's bnneck): train_s says what that costs.

A benchmark, not a test: on a quiet 2-core machine the GAN takes ~XX min, each re-ID run ~4-8 min.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

GEN_CONFIG = HERE.parent / "configs" / "generation" / "ipgan_demo.yaml"
DEFAULT_DATA = Path("data/synth")
SWAP_PAIRS = 256   # query-split pairs measured by quality()


def reid_checkpoints(seed: int, data_root: Path) -> dict[str, Path]:
    """The demo-budget kae and bnneck runs (bench/heads.py's cache), trained if missing."""
    from heads import demo_checkpoints

    return demo_checkpoints(seed, data_root, ("kae", "bnneck"))


def gan_dir(seed: int, data_root: Path) -> Path:
    base = Path("runs/generation/ipgan_demo")
    return base / (f"seed{seed}" if Path(data_root) == DEFAULT_DATA else f"{Path(data_root).name}_seed{seed}")


def train_gan(seed: int, data_root: Path, extra: tuple[str, ...] = ()) -> tuple[Path, float]:
    """(checkpoint, training seconds): IP-GAN on the demo config, resumed or read if finished."""
    from keyreid.generation.config import load_gen_config
    from keyreid.generation.trainer import GanTrainer

    ckpts = reid_checkpoints(seed, data_root)
    out = gan_dir(seed, data_root)
    cfg = load_gen_config(GEN_CONFIG, [f"seed={seed}", f"data.root={data_root}", f"output_dir={out}",
                                       f"reid_checkpoint={ckpts['kae']}", *extra])
    t0 = time.time()
    GanTrainer(cfg, resume=True, show_progress=False).fit()
    return out / "last.pt", _train_seconds(out, time.time() - t0)


def _train_seconds(out: Path, fallback: float) -> float:
    import csv

    log = out / "metrics.csv"
    if not log.is_file():
        return fallback
    rows = list(csv.DictReader(log.open()))
    secs = [float(r["seconds"]) for r in rows if r.get("seconds")]
    return sum(secs) if secs else fallback


def quality(seed: int, data_root: Path, out_dir: Path) -> dict:
    """Swap measurements on SWAP_PAIRS query-split pairs + a grid (generation/ipgan_eval.py)."""
    from keyreid.data.synthetic import SynthScenes
    from keyreid.generation.ipgan_eval import measure_swaps, save_grid, swap_pairs
    from keyreid.generation.trainer import load_generator
    from keyreid.utils.io import atomic_write_text

    out_dir = Path(out_dir)
    done = out_dir / "quality.json"
    if done.is_file():
        return json.loads(done.read_text())
    ckpt, train_s = train_gan(seed, data_root)
    ckpts = reid_checkpoints(seed, data_root)
    method, cfg = load_generator(ckpt)
    pairs = swap_pairs(SynthScenes(data_root), "query", SWAP_PAIRS, seed)
    t0 = time.time()
    numbers, images = measure_swaps(method, data_root, pairs, cfg.data.height, cfg.data.width,
                                    probe_checkpoint=ckpts["kae"], reid_checkpoint=ckpts["bnneck"])
    numbers["eval_s"] = time.time() - t0
    numbers["train_s"] = train_s
    numbers["grid"] = str(save_grid(out_dir / "swaps.png", images, rows=8))
    numbers["columns"] = list(images)
    atomic_write_text(done, json.dumps(numbers, indent=2))
    return numbers


def augmentation(seed: int, data_root: Path, out_dir: Path) -> dict:
    """The demo's bnneck run on the training split + one IP-GAN swap per training image."""
    from keyreid.config import load_config
    from keyreid.data.datasets import build_dataset
    from keyreid.demo.run import DEMO_CONFIG, train_and_test
    from keyreid.engine.data import split_validation
    from keyreid.generation.ipgan_eval import write_augmented_set
    from keyreid.generation.trainer import load_generator
    from keyreid.utils.io import atomic_write_text

    from heads import VARIANTS

    out_dir = Path(out_dir)
    done = out_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    ckpt, gan_s = train_gan(seed, data_root)
    method, _ = load_generator(ckpt)
    probe_cfg = load_config(DEMO_CONFIG, [f"data.root={data_root}", f"seed={seed}"])
    ds = build_dataset("market1501", data_root)
    _, val_q, _ = split_validation(ds.train, probe_cfg.data.val_identities, probe_cfg.seed)
    t0 = time.time()
    summary = write_augmented_set(method, data_root, out_dir / "data", seed,
                                  exclude_pids=sorted({s.pid for s in val_q}))
    gen_s = time.time() - t0
    cfg = load_config(DEMO_CONFIG, [*VARIANTS["bnneck"], f"data.root={out_dir / 'data'}", f"seed={seed}",
                                    f"output_dir={out_dir / 'reid'}", "name=ipgan augmentation"])
    result, _, _ = train_and_test("ipgan augmentation", cfg)
    m = result.metrics
    row = {"R1": 100 * m["R1"], "mAP": 100 * m["mAP"], "mINP": 100 * m["mINP"],
           "train_s": result.train_seconds, "gan_train_s": gan_s, "generate_s": gen_s,
           "generated_images": summary["generated"], "real_images": summary["real_train_images"]}
    atomic_write_text(done, json.dumps(row, indent=2))
    return row


def reid_entries() -> dict[str, Callable[[int, Path, Path], dict]]:
    return {"ipgan augmentation": augmentation}


def reid_controls() -> dict[str, str]:
    """PN-GAN's duplicated-originals run adds as many images as this row (one per training image
    outside the validation identities: 2142 on the demo set) and trains as many steps, but copies
    of the originals instead of anything generated."""
    return {"ipgan augmentation": "pngan control: duplicated originals"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--output", type=Path, default=Path("runs/bench/gen_ipgan"))
    ap.add_argument("--only", choices=("quality", "augmentation"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = args.output / f"seed{args.seed}"
    results = {}
    if args.only in (None, "quality"):
        results["quality"] = quality(args.seed, args.data_root, out / "quality")
        print(json.dumps({"quality": results["quality"]}, indent=2), flush=True)
    if args.only in (None, "augmentation"):
        results["ipgan augmentation"] = augmentation(args.seed, args.data_root, out / "augmentation")
        print(json.dumps({"ipgan augmentation": results["ipgan augmentation"]}, indent=2), flush=True)


if __name__ == "__main__":
    main()
