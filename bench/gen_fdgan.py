"""FD-GAN at demo scale: re-ID of its encoder after stage I and III, and how much pose it holds.

    .venv/bin/python bench/gen_fdgan.py --seed 0                    # everything, prints markdown
    .venv/bin/python bench/gen_fdgan.py --seed 0 --only reid         # or probe / quality
    .venv/bin/python bench/gen_fdgan.py --seed 0 --variants siamese  # skip the kae-encoder run

Pieces, each cached (a killed run resumes where it was):
  the GANs     configs/generation/fdgan_demo.yaml trained by GanTrainer into
               runs/generation/fdgan_demo/<variant>/seed<seed>: variant "siamese" (the paper's
               Siamese MobileNetV2) and "kae" (method_options.encoder=kae: keyreid's keypoint-aligned
               head as E, its heatmap and ID losses kept in stages I and III)
  re-ID        E alone on the test split (squared Euclidean on its feature), with E's stage-I
               weights (kept in the checkpoint) and its final (stage III) weights, plain and with
               the top-100 verification re-scoring; also on the held-out training identities
               (data.val_identities, what stage III is validated on). runs/bench/gen_fdgan/<tag>/reid_<variant>.json
  probe        generation.fdgan_eval.pose_probe (ridge to yaw and keypoints, fitted on half of the
               test identities, scored on the other half) of: the ImageNet backbone before any
               training, the demo's bnneck and kae (bench/heads.py's cache: the same backbone
               trained the usual way), and each FD-GAN encoder after stage I and III
  control      E after stage I, then stage III's encoder steps (same optimiser, pairs, batches)
               with E's own losses only and no generator: how much of stage III's change is the
               GAN's. runs/bench/gen_fdgan/<tag>/control_<variant>.json
  quality      generation.metrics.evaluate_transfer on QUALITY_PAIRS test-split pairs against
               SynthScenes' true transfer, plus a grid (source | target pose | generated | truth)

reid_entries() gives the leaderboard rows ("fdgan stage I", "fdgan stage III", "fdgan stage III +
rescoring", "fdgan on kae encoder", ...); rows that share a training share one GAN run.
A benchmark, not a test: see the demo config's header for the budget.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

GEN_CONFIG = HERE.parent / "configs" / "generation" / "fdgan_demo.yaml"
DEFAULT_DATA = Path("data/synth")
WORK = Path("runs/bench/gen_fdgan")
QUALITY_PAIRS = 256
GRID_ROWS = 8
VARIANTS = {"siamese": [], "kae": ["method_options.encoder=kae"]}
EXTRA: list[str] = []          # --set overrides for every GAN run (smoke tests at a tiny size)


def _tag(seed: int, data_root: Path) -> str:
    return f"seed{seed}" if Path(data_root) == DEFAULT_DATA else f"{Path(data_root).name}_seed{seed}"


def work_dir(seed: int, data_root: Path) -> Path:
    return WORK / _tag(seed, data_root)


def gan_dir(variant: str, seed: int, data_root: Path) -> Path:
    return Path("runs/generation/fdgan_demo") / variant / _tag(seed, data_root)


def _json(path: Path, make: Callable[[], dict]) -> dict:
    from keyreid.utils.io import atomic_write_text

    if path.is_file():
        return json.loads(path.read_text())
    out = make()
    atomic_write_text(path, json.dumps(out, indent=2))
    return out


def gan_config(variant: str, seed: int, data_root: Path):
    from keyreid.generation.config import load_gen_config

    return load_gen_config(GEN_CONFIG, [*VARIANTS[variant], f"seed={seed}", f"data.root={data_root}",
                                        f"output_dir={gan_dir(variant, seed, data_root)}",
                                        f"name=fdgan_demo_{variant}", *EXTRA])


def stage_seconds(variant: str, seed: int, data_root: Path) -> dict[str, float]:
    """Training seconds per stage kind ("I", "II", "III") from the run's metrics.csv."""
    log = gan_dir(variant, seed, data_root) / "metrics.csv"
    out = {"I": 0.0, "II": 0.0, "III": 0.0}
    if log.is_file():
        for row in csv.DictReader(log.open()):
            kind = str(row.get("stage", "I")).split()[0]
            out[kind] = out.get(kind, 0.0) + float(row.get("seconds") or 0.0)
    return out


def train_gan(variant: str, seed: int, data_root: Path) -> Path:
    """The trained checkpoint (last.pt) of a variant; trains or resumes when unfinished."""
    from keyreid.generation.trainer import GanTrainer

    GanTrainer(gan_config(variant, seed, data_root), resume=True, show_progress=False).fit()
    return gan_dir(variant, seed, data_root) / "last.pt"


def load_fdgan(variant: str, seed: int, data_root: Path):
    from keyreid.generation.trainer import load_generator

    method, cfg = load_generator(train_gan(variant, seed, data_root))
    return method.eval(), cfg


def dataset(data_root: Path):
    from keyreid.data.datasets import build_dataset

    return build_dataset("market1501", data_root)


def validation_split(cfg, data_root: Path):
    """(query, gallery) of the held-out training identities, as the trainer carves them."""
    from keyreid.engine.data import split_validation

    _, q, g = split_validation(dataset(data_root).train, cfg.data.val_identities, cfg.seed)
    return q, g


# ------------------------------------------------------------------------------- re-ID

def reid(variant: str, seed: int, data_root: Path) -> dict:
    """{"stage I" / "stage III": {"test": {"plain", "rescored"}, "val": {"plain"}}, "train_s": per stage}."""
    from keyreid.generation.fdgan_eval import RESCORE_TOP, evaluate_encoder

    def make() -> dict:
        method, cfg = load_fdgan(variant, seed, data_root)
        ds = dataset(data_root)
        h, w = cfg.data.height, cfg.data.width
        out = {"train_s": stage_seconds(variant, seed, data_root)}
        val_q, val_g = validation_split(cfg, data_root) if cfg.data.val_identities > 0 else ([], [])
        for name, which in (("stage I", "stage I"), ("stage III", "final")):
            t0 = time.time()
            out[name] = {"test": evaluate_encoder(method, ds.query, ds.gallery, h, w, rescore=RESCORE_TOP,
                                                  which=which)}
            if val_q:
                out[name]["val"] = evaluate_encoder(method, val_q, val_g, h, w, which=which)
            out[name]["eval_s"] = time.time() - t0
        return out

    return _json(work_dir(seed, data_root) / f"reid_{variant}.json", make)


def control(variant: str, seed: int, data_root: Path) -> dict:
    """The control of stage III: E after stage I (the snapshot in the finished run), then stage
    III's encoder optimiser (Adam, stage3_lr_g, BN frozen, the same LR factors) for stage III's
    epochs on stage III's pairs, batches and flips, with E's own losses only (lambda_veri x the
    verification CE, + the head's ID / heatmap losses for kae) and no generator: what stage III
    gives E without the GAN. {"test": {"plain"}, "val": {"plain"}, "train_s"}."""
    from torch.utils.data import DataLoader

    from keyreid.utils.checkpoint import load_checkpoint
    from keyreid.generation.fdgan_eval import evaluate_encoder
    from keyreid.generation.method import lr_factor, unwrap
    from keyreid.generation.methods.fdgan import stage_kind
    from keyreid.generation.trainer import EpochSampler, GanTrainer, _seed_of

    def make() -> dict:
        ckpt = train_gan(variant, seed, data_root)
        cfg = gan_config(variant, seed, data_root)
        cfg.output_dir = str(work_dir(seed, data_root) / f"control_{variant}")
        tr = GanTrainer(cfg, resume=False, show_progress=False)   # data, pairs and a fresh method
        m, o = tr.method, tr.method.opts
        m.load_state_dict(load_checkpoint(ckpt)["method_state"])
        unwrap(m.siamese).load_state_dict(m._stage1_encoder)
        stages = m.stages()
        index = next(i for i, s in enumerate(stages) if stage_kind(s) == "III")
        stage, before = stages[index], sum(s.epochs + s.decay_epochs for s in stages[:index])
        m.begin_stage(stage)
        opt = torch.optim.Adam(m._params(m.siamese), lr=o.stage3_lr_g, betas=tuple(o.betas))
        t0 = time.time()
        for e in range(stage.epochs + stage.decay_epochs):
            for g in opt.param_groups:
                g["lr"] = o.stage3_lr_g * lr_factor(stage, e)
            items = m.pairs(tr.info.train_pids, before + e, cfg.seed, cfg.data.max_pairs_per_epoch)
            item_seed = _seed_of(cfg.seed, index, e)
            ds = tr._pair_dataset(tr.train_samples, items, cfg.data.flip_prob, item_seed)
            loader = DataLoader(ds, batch_sampler=EpochSampler(len(ds), cfg.data.batch_size, item_seed),
                                num_workers=cfg.data.workers)
            m.train()
            for batch in loader:
                losses = m.verification_losses(batch, tr.device)
                loss = losses["total"] + (o.stage3_lambda_veri - 1) * losses["verification"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        out = {"train_s": time.time() - t0}
        ds = dataset(data_root)
        out["test"] = evaluate_encoder(m, ds.query, ds.gallery, cfg.data.height, cfg.data.width)
        if cfg.data.val_identities > 0:
            val_q, val_g = validation_split(cfg, data_root)
            out["val"] = evaluate_encoder(m, val_q, val_g, cfg.data.height, cfg.data.width)
        return out

    return _json(work_dir(seed, data_root) / f"control_{variant}.json", make)


def _row(metrics: dict, train_s: float, **extra) -> dict:
    return {"R1": 100 * metrics["R1"], "mAP": 100 * metrics["mAP"], "mINP": 100 * metrics["mINP"],
            "train_s": train_s, **extra}


def reid_row(variant: str, stage: str, rescored: bool) -> Callable[[int, Path, Path], dict]:
    def run(seed: int, data_root: Path, out_dir: Path) -> dict:
        def make() -> dict:
            r = reid(variant, seed, data_root)
            secs = r["train_s"]
            train_s = secs["I"] if stage == "stage I" else sum(secs.values())
            return _row(r[stage]["test"]["rescored" if rescored else "plain"], train_s)
        return _json(Path(out_dir) / "result.json", make)
    return run


def control_row(variant: str) -> Callable[[int, Path, Path], dict]:
    def run(seed: int, data_root: Path, out_dir: Path) -> dict:
        def make() -> dict:
            c = control(variant, seed, data_root)
            return _row(c["test"]["plain"], stage_seconds(variant, seed, data_root)["I"] + c["train_s"])
        return _json(Path(out_dir) / "result.json", make)
    return run


def reid_entries() -> dict[str, Callable[[int, Path, Path], dict]]:
    rows = {}
    for stage in ("stage I", "stage III"):
        rows[f"fdgan {stage}"] = reid_row("siamese", stage, False)
        rows[f"fdgan {stage} + rescoring"] = reid_row("siamese", stage, True)
    rows["fdgan stage I + verification fine-tune (control)"] = control_row("siamese")
    rows["fdgan on kae encoder stage I"] = reid_row("kae", "stage I", False)
    rows["fdgan on kae encoder"] = reid_row("kae", "stage III", False)
    rows["fdgan on kae encoder stage I + fine-tune (control)"] = control_row("kae")
    return rows


def reid_controls() -> dict[str, str]:
    """Stage III against stage I + the same encoder steps without the generator (the leaderboard
    pairs them by seed)."""
    return {"fdgan stage III": "fdgan stage I + verification fine-tune (control)",
            "fdgan on kae encoder": "fdgan on kae encoder stage I + fine-tune (control)"}


# ------------------------------------------------------------------------------- pose probe

def reid_checkpoints(seed: int, data_root: Path) -> dict[str, Path]:
    """The demo-budget bnneck and kae runs (bench/heads.py's cache), trained if missing."""
    from heads import demo_checkpoints

    return demo_checkpoints(seed, data_root, ("bnneck", "kae"))


def probe(seed: int, data_root: Path, variants, heads: bool = True) -> dict:
    """Pose-probe numbers per feature source (cached per source)."""
    from keyreid.generation.fdgan_eval import encoder_features, pose_probe
    from keyreid.inference import load_model

    ds = dataset(data_root)
    samples = ds.query + ds.gallery
    work = work_dir(seed, data_root) / "probe"
    out = {}

    def keyreid_model(path: Path, name: str) -> dict:
        def make() -> dict:
            m = load_model(path, device="cpu")
            f = m.embed([s.path for s in samples], batch_size=128, normalize=False)
            return pose_probe(f, samples, data_root, seed)
        return _json(work / f"{name}.json", make)

    def imagenet() -> dict:
        def make() -> dict:
            from keyreid.generation.nets.fdgan_nets import ImageEncoder
            from keyreid.models.backbones import build_backbone

            cfg = gan_config("siamese", seed, data_root)
            o = cfg.method_options
            enc = ImageEncoder(build_backbone(o["backbone"], pretrained=o["pretrained"],
                                              last_stride=o.get("last_stride", 1))).eval()

            class Fake:
                training = False
                def encode(self, x):
                    with torch.no_grad():
                        return enc(x).feature
                def eval(self):
                    return self
                def train(self, mode=True):
                    return self
            f = encoder_features(Fake(), samples, cfg.data.height, cfg.data.width)
            return pose_probe(f, samples, data_root, seed)
        return _json(work / "imagenet.json", make)

    out["ImageNet backbone, untrained"] = imagenet()
    if heads:
        ckpts = reid_checkpoints(seed, data_root)
        out["bnneck (demo)"] = keyreid_model(ckpts["bnneck"], "bnneck")
        out["kae (demo)"] = keyreid_model(ckpts["kae"], "kae")
    for variant in variants:
        for stage, which in (("stage I", "stage I"), ("stage III", "final")):
            def make(variant=variant, which=which) -> dict:
                method, cfg = load_fdgan(variant, seed, data_root)
                f = encoder_features(method, samples, cfg.data.height, cfg.data.width, which=which)
                return pose_probe(f, samples, data_root, seed)
            out[f"fdgan {variant} {stage}"] = _json(work / f"fdgan_{variant}_{stage.replace(' ', '')}.json", make)
    return out


# ------------------------------------------------------------------------------- quality

def _save_png(path: Path, array: np.ndarray) -> str:
    from PIL import Image

    from keyreid.utils.io import atomic_write

    img = Image.fromarray(array)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return str(path)


def _grid(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    h, w = rows[0][0].shape[:2]
    out = np.full((len(rows) * (h + gap) - gap, len(rows[0]) * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            out[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = img
    return out


def quality(seed: int, data_root: Path, out_dir: Path) -> dict:
    """evaluate_transfer numbers of the siamese variant's generator + {"grid": png path}."""
    from keyreid.data.keypoints import COCO17
    from keyreid.data.synthetic.paired import SynthScenes
    from keyreid.generation.metrics import IdentityJudge, KeypointProbe, evaluate_transfer, transfer_pairs
    from keyreid.generation.pose import pose_skeleton, skeleton_image

    out_dir = Path(out_dir)

    def make() -> dict:
        method, _ = load_fdgan("siamese", seed, data_root)
        ckpts = reid_checkpoints(seed, data_root)
        scenes = SynthScenes(data_root)
        pairs = transfer_pairs(scenes, QUALITY_PAIRS, seed)
        t0 = time.time()
        numbers = evaluate_transfer(method, scenes, pairs, KeypointProbe(ckpts["kae"]),
                                    IdentityJudge.for_dataset(ckpts["bnneck"], data_root), return_images=True)
        numbers["eval_s"] = time.time() - t0
        numbers["train_s"] = sum(stage_seconds("siamese", seed, data_root).values())
        generated = numbers.pop("generated")
        skeleton, convert = pose_skeleton(COCO17)
        rows = []
        for (s, t), gen in list(zip(pairs, generated))[:GRID_ROWS]:
            src, truth = scenes.render(s), scenes.transfer(s, t)
            h, w = src.image.shape[:2]
            rows.append([src.image, skeleton_image(convert(truth.keypoints), skeleton, h, w), gen, truth.image])
        numbers["grid"] = _save_png(out_dir / "grid.png", _grid(rows))
        numbers["columns"] = ["source", "target pose", "generated", "truth (SynthScenes.transfer)"]
        return numbers

    return _json(out_dir / "quality.json", make)


# ------------------------------------------------------------------------------- report

def _fmt(m: dict) -> str:
    return f"{100 * m['R1']:.1f} | {100 * m['mAP']:.1f} | {100 * m['mINP']:.1f}"


def report(reids: dict, probes: dict, baseline: dict | None, controls: dict | None = None) -> str:
    lines = ["| encoder | test R1 | mAP | mINP | + re-scoring R1 | mAP | mINP | val mAP | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    if baseline:
        lines.append(f"| bnneck, the usual way (demo) | {_fmt(baseline['metrics'])} | | | | | "
                     f"{baseline.get('train_seconds', 0):.0f} |")
    for variant, r in reids.items():
        for stage in ("stage I", "stage III"):
            t, secs = r[stage]["test"], r["train_s"]
            train_s = secs["I"] if stage == "stage I" else sum(secs.values())
            val = f"{100 * r[stage]['val']['plain']['mAP']:.1f}" if "val" in r[stage] else "-"
            lines.append(f"| fdgan {variant} {stage} | {_fmt(t['plain'])} | {_fmt(t['rescored'])} | {val} | "
                         f"{train_s:.0f} |")
        c = (controls or {}).get(variant)
        if c:
            val = f"{100 * c['val']['plain']['mAP']:.1f}" if "val" in c else "-"
            lines.append(f"| control: {variant} stage I + stage III's E steps without G | {_fmt(c['test']['plain'])} "
                         f"| | | | {val} | {r['train_s']['I'] + c['train_s']:.0f} |")
    if probes:
        lines += ["", "| features | yaw R^2 | yaw error (deg) | keypoint R^2 |", "|---|---|---|---|"]
        for name, p in probes.items():
            lines.append(f"| {name} | {p['yaw_r2']:.3f} | {p['yaw_error_deg']:.1f} | {p['keypoint_r2']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--only", choices=("reid", "control", "probe", "quality"))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra key=value for the GAN runs (a smoke test at a tiny size)")
    ap.add_argument("--no-heads", action="store_true",
                    help="probe without the demo's bnneck / kae runs (and no quality)")
    args = ap.parse_args()
    EXTRA.extend(args.overrides)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.time()
    reids, probes = {}, {}
    if args.only in (None, "reid"):
        for v in args.variants:
            reids[v] = reid(v, args.seed, args.data_root)
            print(f"[{time.time() - t0:.0f} s] re-ID {v}: {json.dumps(reids[v])}", flush=True)
    controls = {}
    if args.only in (None, "control"):
        for v in args.variants:
            controls[v] = control(v, args.seed, args.data_root)
            print(f"[{time.time() - t0:.0f} s] control {v}: {json.dumps(controls[v])}", flush=True)
    if args.only in (None, "probe"):
        probes = probe(args.seed, args.data_root, args.variants, heads=not args.no_heads)
        print(f"[{time.time() - t0:.0f} s] probe: {json.dumps(probes)}", flush=True)
    if args.only in (None, "quality") and not args.no_heads:
        q = quality(args.seed, args.data_root, work_dir(args.seed, args.data_root) / "quality")
        print(f"[{time.time() - t0:.0f} s] quality: {json.dumps(q)}", flush=True)
    base = None
    from heads import cache_dir

    done = cache_dir(args.data_root) / f"seed{args.seed}" / "bnneck" / "test_metrics.json"
    if done.is_file():
        base = json.loads(done.read_text())
    print(report(reids, probes, base, controls))


if __name__ == "__main__":
    main()
