"""PN-GAN at demo scale: pose-transfer quality and the paper's re-ID use of canonical poses.

    .venv/bin/python bench/gen_pngan.py --seed 0                  # everything, prints JSON
    .venv/bin/python bench/gen_pngan.py --seed 0 --only quality   # or gan / baseline_net / fused / augmentation

Stages, each cached under runs/bench/gen_pngan/seed<seed> (a killed run resumes where it was):
  canonical.json/.png   8 canonical poses of the training set (generation/canonical.py)
  the GAN               configs/generation/pngan_demo.yaml with those poses in its card,
                        runs/generation/pngan_demo/seed<seed> (resumes)
  quality               generation.metrics.evaluate_transfer on QUALITY_PAIRS test-split pairs
                        (query source, another identity's pose) vs SynthScenes' true transfer:
                        L1 / SSIM (whole and inside the true body), PCK of the kae probe against
                        the target and the source pose, the bnneck judge's identity rank-1;
                        the source image itself as control. grid.png: source | target pose |
                        generated | truth; canonical_grid.png: query images in the 8 poses.
  baseline_net          every query / gallery image rendered in the 8 poses (renders/, resumable);
                        net (a), bench/heads.py's bnneck, embeds the renderings: fused rows
                        "(baseline net)", no re-ID training beyond the baseline's; control:
                        net (a)'s feature of the mirrored original in place of the renderings
                        ("pngan control: mirrored + original"), a second view without a GAN
  fused                 (a) bench/heads.py's bnneck (configs/demo.yaml) on the original images;
                        (b) the same recipe on generated images only: each training image in
                        TRAIN_POSES canonical poses (default 1, drawn per image; the paper: all 8,
                        --train-poses 8); every query / gallery image rendered in the 8 poses, net
                        (b)'s 8 features L2-normalised and fused (avg, max, concat), with and
                        without net (a)'s feature of the original image; control: a second
                        bnneck trained on the originals (seed + 1) in place of net (b) ("pngan
                        control: second bnneck + original"). "pngan generated only":
                        net (b) on the original test images.
  augmentation          (c) the same recipe on the originals + their renderings (validation
                        identities: originals only, so checkpoint choice is the baseline's);
                        control: the same tree with each rendering replaced by its source image
                        ("pngan control: duplicated originals": (c)'s steps, nothing generated).

Same budget: configs/demo.yaml's backbone, size and epochs for every re-ID run. With one rendering
per image, net (b) has the baseline's steps and (c) twice them (as bench/gen_ipgan.py's row); with
--train-poses 8 they take 8x / 9x (hours on a shared 2-core machine): train_s says what it cost.
A benchmark, not a test: on a quiet 2-core machine the GAN takes ~30 min, rendering the test
split in 8 poses ~15 min, each re-ID run 4-8 min (1 pose per image).
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

GEN_CONFIG = HERE.parent / "configs" / "generation" / "pngan_demo.yaml"
DEFAULT_DATA = Path("data/synth")
WORK = Path("runs/bench/gen_pngan")
QUALITY_PAIRS = 256
GRID_ROWS = 8
# canonical renderings per training image for nets (b) and (c): 1 (a pose drawn per image) keeps
# the generated set as large as the original, so the demo's epochs are also its steps; the
# paper's protocol is all 8 (--train-poses 8: 8x / 9x the steps of the baseline).
TRAIN_POSES = int(os.environ.get("PNGAN_TRAIN_POSES", "1"))


def _tag(seed: int, data_root: Path) -> str:
    return f"seed{seed}" if Path(data_root) == DEFAULT_DATA else f"{Path(data_root).name}_seed{seed}"


def work_dir(seed: int, data_root: Path) -> Path:
    return WORK / _tag(seed, data_root)


def reid_checkpoints(seed: int, data_root: Path) -> dict[str, Path]:
    """The demo-budget kae and bnneck runs (bench/heads.py's cache), trained if missing."""
    from heads import demo_checkpoints

    return demo_checkpoints(seed, data_root, ("kae", "bnneck"))


def dataset(data_root: Path):
    """The Market-layout set with its keypoints (training samples need them for the poses)."""
    from keyreid.data.datasets import build_dataset

    ds = build_dataset("market1501", data_root)
    ds.attach_keypoints(Path(data_root) / "keypoints.jsonl", require_all=False)
    return ds


def canonical_file(seed: int, data_root: Path) -> Path:
    from keyreid.data.keypoints import get_skeleton
    from keyreid.generation.canonical import canonical_from_samples, write_canonical

    path = work_dir(seed, data_root) / "canonical.json"
    if not path.is_file():
        ds = dataset(data_root)
        canon = canonical_from_samples(ds.train, get_skeleton(ds.skeleton), k=8, seed=seed)
        write_canonical(path, canon, picture_path=path.with_suffix(".png"))
    return path


def gan_dir(seed: int, data_root: Path) -> Path:
    return Path("runs/generation/pngan_demo") / _tag(seed, data_root)


def _seconds(log: Path, fallback: float) -> float:
    if not log.is_file():
        return fallback
    secs = [float(r["seconds"]) for r in csv.DictReader(log.open()) if r.get("seconds")]
    return sum(secs) if secs else fallback


def train_gan(seed: int, data_root: Path) -> tuple[Path, float]:
    """(checkpoint, training seconds): PN-GAN on the demo config, resumed or read if finished."""
    from keyreid.generation.config import load_gen_config
    from keyreid.generation.trainer import GanTrainer

    out = gan_dir(seed, data_root)
    cfg = load_gen_config(GEN_CONFIG, [f"seed={seed}", f"data.root={data_root}", f"output_dir={out}"])
    cfg.method_options = {**cfg.method_options, "canonical": str(canonical_file(seed, data_root))}
    t0 = time.time()
    GanTrainer(cfg, resume=True, show_progress=False).fit()
    return out / "last.pt", _seconds(out / "metrics.csv", time.time() - t0)


def load_pngan(seed: int, data_root: Path):
    from keyreid.generation.trainer import load_generator

    ckpt, gan_s = train_gan(seed, data_root)
    method, cfg = load_generator(ckpt)
    return method.eval(), gan_s


# ------------------------------------------------------------------------------- quality

def _save_png(path: Path, array: np.ndarray) -> str:
    from PIL import Image

    from keyreid.utils.io import atomic_write

    img = Image.fromarray(array)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return str(path)


def _grid(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    h, w = rows[0][0].shape[:2]
    n = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, n * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            out[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = img
    return out


def quality(seed: int, data_root: Path, out_dir: Path) -> dict:
    """evaluate_transfer numbers on QUALITY_PAIRS test-split pairs + grids."""
    from keyreid.data.keypoints import COCO17
    from keyreid.data.synthetic.paired import SynthScenes
    from keyreid.generation.metrics import IdentityJudge, KeypointProbe, evaluate_transfer, transfer_pairs
    from keyreid.generation.pngan_reid import load_source, method_canonical, render_poses
    from keyreid.generation.pose import pose_skeleton, skeleton_image
    from keyreid.utils.io import atomic_write_text

    out_dir = Path(out_dir)
    done = out_dir / "quality.json"
    if done.is_file():
        return json.loads(done.read_text())
    method, gan_s = load_pngan(seed, data_root)
    ckpts = reid_checkpoints(seed, data_root)
    scenes = SynthScenes(data_root)
    pairs = transfer_pairs(scenes, QUALITY_PAIRS, seed)
    t0 = time.time()
    numbers = evaluate_transfer(method, scenes, pairs, KeypointProbe(ckpts["kae"]),
                                IdentityJudge.for_dataset(ckpts["bnneck"], data_root), return_images=True)
    numbers["eval_s"] = time.time() - t0
    numbers["train_s"] = gan_s
    generated = numbers.pop("generated")
    skeleton, convert = pose_skeleton(COCO17)
    rows = []
    for (s, t), gen in list(zip(pairs, generated))[:GRID_ROWS]:
        src, truth = scenes.render(s), scenes.transfer(s, t)
        h, w = src.image.shape[:2]
        rows.append([src.image, skeleton_image(convert(truth.keypoints), skeleton, h, w), gen, truth.image])
    numbers["grid"] = _save_png(out_dir / "grid.png", _grid(rows))
    numbers["columns"] = ["source", "target pose", "generated", "truth (SynthScenes.transfer)"]
    # a few query people in the 8 canonical poses
    canon = method_canonical(method)
    queries = scenes.paths("query")[:: max(1, len(scenes.paths("query")) // 6)][:6]
    sources = torch.stack([load_source(Path(data_root) / q, method.height, method.width) for q in queries])
    images = render_poses(method, sources, canon.pixels(method.height, method.width))
    originals = [((sources[i].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy() for i in range(len(queries))]
    numbers["canonical_grid"] = _save_png(out_dir / "canonical_grid.png",
                                          _grid([[o, *imgs] for o, imgs in zip(originals, images)]))
    atomic_write_text(done, json.dumps(numbers, indent=2))
    return numbers


# ------------------------------------------------------------------------------- re-ID

def _reid_run(name: str, seed: int, data_root: Path, out: Path) -> dict:
    """configs/demo.yaml's bnneck recipe on the dataset at data_root; cached in out."""
    from keyreid.config import load_config
    from keyreid.demo.run import DEMO_CONFIG, train_and_test

    from heads import VARIANTS

    done = out / "test_metrics.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        return {**saved["metrics"], "train_seconds": saved["train_seconds"]}
    cfg = load_config(DEMO_CONFIG, [*VARIANTS["bnneck"], f"data.root={data_root}", f"seed={seed}",
                                    f"output_dir={out}", f"name={name}"])
    result, _, _ = train_and_test(name, cfg)
    return {**result.metrics, "train_seconds": result.train_seconds}


def _trees(seed: int, data_root: Path, method, which: str):
    from keyreid.config import load_config
    from keyreid.demo.run import DEMO_CONFIG
    from keyreid.engine.data import split_validation
    from keyreid.generation.pngan_reid import method_canonical, write_training_tree

    work = work_dir(seed, data_root)
    ds = dataset(data_root)
    canon = method_canonical(method)
    if which == "generated":
        return write_training_tree(method, ds.train, canon, data_root, work / f"tree_generated_p{TRAIN_POSES}",
                                   originals=False, renders_dir=work / "renders" / "train",
                                   poses_per_image=TRAIN_POSES, seed=seed)
    val_cfg = load_config(DEMO_CONFIG, [f"data.root={data_root}", f"seed={seed}"])
    _, val_q, val_g = split_validation(ds.train, val_cfg.data.val_identities, val_cfg.seed)
    return write_training_tree(method, ds.train, canon, data_root, work / f"tree_augmented_p{TRAIN_POSES}",
                               originals=True, exclude_pids=sorted({s.pid for s in val_q}),
                               renders_dir=work / "renders" / "train", poses_per_image=TRAIN_POSES,
                               seed=seed)


def _json_stage(path: Path, make: Callable[[], dict]) -> dict:
    from keyreid.utils.io import atomic_write_text

    if path.is_file():
        return json.loads(path.read_text())
    out = make()
    atomic_write_text(path, json.dumps(out, indent=2))
    return out


def test_renders(seed: int, data_root: Path) -> dict:
    """Every query / gallery image in the canonical poses (JPEGs under renders/, resumable)."""
    from keyreid.generation.pngan_reid import method_canonical, render_samples

    work = work_dir(seed, data_root)

    def make() -> dict:
        method, gan_s = load_pngan(seed, data_root)
        ds, canon = dataset(data_root), method_canonical(method)
        t0 = time.time()
        for split, samples in (("query", ds.query), ("gallery", ds.gallery)):
            render_samples(method, samples, canon, work / "renders" / split,
                           description=f"canonical poses ({split})")
        return {"render_test_s": time.time() - t0, "gan_train_s": gan_s,
                "images": len(ds.query) + len(ds.gallery), "poses": len(canon.poses)}
    return _json_stage(work / "renders_test.json", make)


def _rendered_paths(work: Path, samples, k: int) -> list[list[Path]]:
    from keyreid.generation.pngan_reid import rendered_name

    return [[work / "renders" / s.split / rendered_name(Path(s.path).name, p) for p in range(k)]
            for s in samples]


def _original_features(model, ds) -> tuple[np.ndarray, np.ndarray]:
    """A LoadedModel's un-normalised features of the original query and gallery images."""
    return (model.embed([s.path for s in ds.query], batch_size=128, normalize=False),
            model.embed([s.path for s in ds.gallery], batch_size=128, normalize=False))


def _net_a_train_s(seed: int, data_root: Path) -> float:
    return json.loads((reid_checkpoints(seed, data_root)["bnneck"].parent / "test_metrics.json").read_text())[
        "train_seconds"]


def _fusion(seed: int, data_root: Path, net: Path) -> dict:
    """fusion_metrics of `net`'s features of the renderings, with net (a)'s of the originals."""
    from keyreid.generation.pngan_reid import embed_rendered, fusion_metrics
    from keyreid.inference import load_model

    work = work_dir(seed, data_root)
    k = test_renders(seed, data_root)["poses"]
    ds = dataset(data_root)
    model, model_a = load_model(net, device="cpu"), load_model(reid_checkpoints(seed, data_root)["bnneck"], device="cpu")
    qf = embed_rendered(model, _rendered_paths(work, ds.query, k))
    gf = embed_rendered(model, _rendered_paths(work, ds.gallery, k))
    qa, ga = _original_features(model_a, ds)
    return fusion_metrics(ds.query, ds.gallery, qf, gf, qa, ga)


def fused_baseline(seed: int, data_root: Path) -> dict:
    """No extra re-ID training: net (a), trained on the originals, embeds the renderings."""
    work = work_dir(seed, data_root)

    def make() -> dict:
        rend = test_renders(seed, data_root)
        net_a = reid_checkpoints(seed, data_root)["bnneck"]
        t0 = time.time()
        metrics = _fusion(seed, data_root, net_a)
        a = json.loads((net_a.parent / "test_metrics.json").read_text())
        return {"metrics": metrics, "net_a_train_s": a["train_seconds"], "embed_s": time.time() - t0, **rend}
    return _json_stage(work / "fused_baseline_net.json", make)


def mirror_control(seed: int, data_root: Path) -> dict:
    """Control for the "+ original" rows: net (a)'s feature of the original beside its feature of
    the mirrored original, fused exactly like a rendering's (pngan_reid.with_original). A second
    view that needs no generator: what a GAN rendering adds beyond it is the GAN's."""
    from PIL import Image, ImageOps

    from keyreid.generation.pngan_reid import cosine_distances, with_original
    from keyreid.evaluation.split import reid_metrics
    from keyreid.inference import load_model

    work = work_dir(seed, data_root)

    def make() -> dict:
        ds = dataset(data_root)
        model_a = load_model(reid_checkpoints(seed, data_root)["bnneck"], device="cpu")

        def mirrored(samples) -> np.ndarray:
            return model_a.embed([ImageOps.mirror(Image.open(s.path).convert("RGB")) for s in samples],
                                 batch_size=128, normalize=False)

        qa, ga = _original_features(model_a, ds)
        qm, gm = mirrored(ds.query), mirrored(ds.gallery)
        return {"metrics": {
            "original": reid_metrics(cosine_distances(qa, ga), ds.query, ds.gallery, 50),
            "mirrored + original": reid_metrics(cosine_distances(with_original(qm, qa), with_original(gm, ga)),
                                                ds.query, ds.gallery, 50)}}
    return _json_stage(work / "mirror_control.json", make)


def ensemble_control(seed: int, data_root: Path) -> dict:
    """Control for net (b)'s "+ original" rows, which join two networks: net (a) beside a second
    bnneck trained on real images (the demo recipe, seed + 1), fused like net (b)'s feature."""
    from heads import cache_dir, run_one

    from keyreid.generation.pngan_reid import cosine_distances, with_original
    from keyreid.evaluation.split import reid_metrics
    from keyreid.inference import load_model

    work, other = work_dir(seed, data_root), seed + 1

    def make() -> dict:
        ds = dataset(data_root)
        run_one("bnneck", other, cache_dir(data_root), Path(data_root), [])
        nets = [reid_checkpoints(seed, data_root)["bnneck"], cache_dir(data_root) / f"seed{other}" / "bnneck" / "best.pt"]
        (qa, ga), (qo, go) = [_original_features(load_model(net, device="cpu"), ds) for net in nets]
        return {"other_seed": other, "metrics": {
            "second bnneck + original": reid_metrics(cosine_distances(with_original(qo, qa), with_original(go, ga)),
                                                     ds.query, ds.gallery, 50)}}
    return _json_stage(work / "ensemble_control.json", make)


def fused(seed: int, data_root: Path) -> dict:
    """The paper's protocol: net (b) trained on generated images embeds the renderings."""
    work = work_dir(seed, data_root)

    def make() -> dict:
        method, gan_s = load_pngan(seed, data_root)
        net_a = reid_checkpoints(seed, data_root)["bnneck"]
        a = json.loads((net_a.parent / "test_metrics.json").read_text())
        t0 = time.time()
        tree = _trees(seed, data_root, method, "generated")
        render_train_s = time.time() - t0
        b = _reid_run("pngan generated", seed, tree.root, work / f"reid_generated_p{TRAIN_POSES}")
        rend = test_renders(seed, data_root)
        t0 = time.time()
        metrics = _fusion(seed, data_root, work / f"reid_generated_p{TRAIN_POSES}" / "best.pt")
        return {"metrics": metrics, "generated_only_on_originals": b,
                "net_a_train_s": a["train_seconds"], "net_b_train_s": b["train_seconds"],
                "render_train_s": render_train_s, "embed_s": time.time() - t0,
                "generated_train_images": tree.generated, "train_poses_per_image": TRAIN_POSES,
                **rend, "gan_train_s": gan_s}
    return _json_stage(work / f"fused_p{TRAIN_POSES}.json", make)


def _row(metrics: dict, train_s: float, **extra) -> dict:
    return {"R1": 100 * metrics["R1"], "mAP": 100 * metrics["mAP"], "mINP": 100 * metrics["mINP"],
            "train_s": train_s, **extra}


def _cached(out_dir: Path, make: Callable[[], dict]) -> dict:
    from keyreid.utils.io import atomic_write_text

    done = Path(out_dir) / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    row = make()
    atomic_write_text(done, json.dumps(row, indent=2))
    return row


def fused_row(key: str, baseline_net: bool = False) -> Callable[[int, Path, Path], dict]:
    def run(seed: int, data_root: Path, out_dir: Path) -> dict:
        def make() -> dict:
            f = fused_baseline(seed, data_root) if baseline_net else fused(seed, data_root)
            train_s = f["net_a_train_s"] if baseline_net else \
                f["net_b_train_s"] + (f["net_a_train_s"] if key.endswith("original") else 0.0)
            return _row(f["metrics"][key], train_s, gan_train_s=f["gan_train_s"],
                        render_s=f.get("render_train_s", 0.0) + f["render_test_s"])
        return _cached(out_dir, make)
    return run


def mirror_row(seed: int, data_root: Path, out_dir: Path) -> dict:
    """The "+ original (baseline net)" rows' control: a mirrored image in place of the renderings."""
    def make() -> dict:
        m = mirror_control(seed, data_root)["metrics"]["mirrored + original"]
        return _row(m, _net_a_train_s(seed, data_root))
    return _cached(out_dir, make)


def ensemble_row(seed: int, data_root: Path, out_dir: Path) -> dict:
    """Net (b)'s "+ original" rows' control: a second real-image bnneck in place of net (b)."""
    def make() -> dict:
        m = ensemble_control(seed, data_root)["metrics"]["second bnneck + original"]
        return _row(m, 2 * _net_a_train_s(seed, data_root))
    return _cached(out_dir, make)


def generated_only(seed: int, data_root: Path, out_dir: Path) -> dict:
    """Net (b) tested on the original test images (no rendering at test time)."""
    def make() -> dict:
        f = fused(seed, data_root)
        return _row(f["generated_only_on_originals"], f["net_b_train_s"], gan_train_s=f["gan_train_s"])
    return _cached(out_dir, make)


def augmentation(seed: int, data_root: Path, out_dir: Path) -> dict:
    """(c): originals + their canonical-pose renderings, the demo's bnneck recipe."""
    def make() -> dict:
        work = work_dir(seed, data_root)
        method, gan_s = load_pngan(seed, data_root)
        tree = _trees(seed, data_root, method, "augmented")
        r = _reid_run("pngan augmentation", seed, tree.root, work / f"reid_augmented_p{TRAIN_POSES}")
        return _row(r, r["train_seconds"], gan_train_s=gan_s, generated_images=tree.generated,
                    real_images=tree.originals, train_poses_per_image=TRAIN_POSES)
    return _cached(out_dir, make)


def duplicated(seed: int, data_root: Path, out_dir: Path) -> dict:
    """Control for (c): the augmented tree with each rendering replaced by a copy (link) of its
    source image, so the run has (c)'s images per epoch, steps and schedule but nothing generated."""
    from keyreid.generation.pngan_reid import SPLIT_DIRS, _link, method_canonical, rendered_name

    def make() -> dict:
        work = work_dir(seed, data_root)
        method, _ = load_pngan(seed, data_root)
        aug = _trees(seed, data_root, method, "augmented")
        k = len(method_canonical(method).poses)
        source = {rendered_name(Path(x.path).name, p): Path(x.path) for x in dataset(data_root).train for p in range(k)}
        tree = work / f"tree_duplicated_p{TRAIN_POSES}"
        renders = (work / "renders" / "train").resolve()
        copies = 0
        for entry in (aug.root / SPLIT_DIRS["train"]).iterdir():
            rendered = entry.resolve().parent == renders
            _link(source[entry.name] if rendered else entry, tree / SPLIT_DIRS["train"] / entry.name)
            copies += rendered
        for split in ("query", "gallery"):
            _link(Path(data_root) / SPLIT_DIRS[split], tree / SPLIT_DIRS[split])
        r = _reid_run("pngan duplicated originals", seed, tree, work / f"reid_duplicated_p{TRAIN_POSES}")
        return _row(r, r["train_seconds"], duplicated_images=copies)
    return _cached(out_dir, make)


def reid_entries() -> dict[str, Callable[[int, Path, Path], dict]]:
    rows = {f"pngan fused {how}": fused_row(f"fused {how}") for how in ("avg", "max", "concat")}
    rows.update({f"pngan fused {how} + original": fused_row(f"fused {how} + original")
                 for how in ("avg", "max", "concat")})
    rows.update({f"pngan fused {how} (baseline net)": fused_row(f"fused {how}", baseline_net=True)
                 for how in ("avg", "max", "concat")})
    rows.update({f"pngan fused {how} + original (baseline net)": fused_row(f"fused {how} + original", True)
                 for how in ("avg", "max", "concat")})
    rows["pngan control: mirrored + original (baseline net)"] = mirror_row
    rows["pngan control: second bnneck + original"] = ensemble_row
    rows["pngan generated only"] = generated_only
    rows["pngan augmentation"] = augmentation
    rows["pngan control: duplicated originals"] = duplicated
    return rows


def reid_controls() -> dict[str, str]:
    """Each row that uses the generator -> its control row (the leaderboard pairs them by seed)."""
    controls = {f"pngan fused {how} + original (baseline net)": "pngan control: mirrored + original (baseline net)"
                for how in ("avg", "max", "concat")}
    controls.update({f"pngan fused {how} + original": "pngan control: second bnneck + original"
                     for how in ("avg", "max", "concat")})
    controls["pngan augmentation"] = "pngan control: duplicated originals"
    return controls


def main() -> None:
    global TRAIN_POSES
    from heads import slug
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--output", type=Path, default=Path("runs/bench/gen_pngan"))
    ap.add_argument("--only", choices=("gan", "quality", "baseline_net", "fused", "augmentation"))
    ap.add_argument("--train-poses", type=int, default=TRAIN_POSES,
                    help="canonical renderings per training image for nets (b), (c): 1 (default) or 8 (the paper)")
    args = ap.parse_args()
    TRAIN_POSES = args.train_poses
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = args.output / _tag(args.seed, args.data_root)
    if args.train_poses != 1:
        out = out / f"train_poses{args.train_poses}"
    if args.only == "gan":
        ckpt, seconds = train_gan(args.seed, args.data_root)
        print(json.dumps({"gan": str(ckpt), "train_s": seconds}), flush=True)
    if args.only in (None, "quality"):
        q = quality(args.seed, args.data_root, out / "quality")
        print(json.dumps({"quality": q}, indent=2), flush=True)
    def rows(names):
        return {name: fn(args.seed, args.data_root, out / "rows" / slug(name))
                for name, fn in reid_entries().items() if name in names}
    if args.only in (None, "baseline_net"):
        print(json.dumps(rows([n for n in reid_entries() if n.endswith("(baseline net)")]), indent=2), flush=True)
    if args.only in (None, "fused"):
        names = [n for n in reid_entries() if n.startswith("pngan fused") and not n.endswith("(baseline net)")]
        names.append("pngan control: second bnneck + original")
        print(json.dumps(rows(names + ["pngan generated only"]), indent=2), flush=True)
    if args.only in (None, "augmentation"):
        row = augmentation(args.seed, args.data_root, out / "rows" / slug("pngan augmentation"))
        ctrl = duplicated(args.seed, args.data_root, out / "rows" / slug("pngan control: duplicated originals"))
        print(json.dumps({"pngan augmentation": row, "pngan control: duplicated originals": ctrl}, indent=2),
              flush=True)


if __name__ == "__main__":
    main()
