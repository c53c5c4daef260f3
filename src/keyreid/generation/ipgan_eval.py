"""What a trained IP-GAN does on the synthetic benchmark, measured against the renderer.

Swaps x' = G(identity of A, attributes of B) for pairs (A, B) of test-split people of different
identities (open set: the generator never saw them):

- pose: a keypoint model (generation.metrics.KeypointProbe) finds keypoints on x'; PCK against
  B's keypoints and against A's (the dataset's keypoints, scaled to the generation size), and
  the share of pairs whose keypoints are closer to B's than to A's. The probe on the real B
  images is the ceiling.
- identity: a re-ID model ranks each x' against the test gallery (real images): rank-1 with A's
  identity, and with B's (how much of B's person leaks through the attribute code), leaving out
  the claimed identity's gallery images from B's camera (x' is drawn in B's scene); chance is
  1 / number of gallery identities; the same model on the real A images is the ceiling. Use
  another re-ID model than the identity encoder: the encoder's own embedding would reward
  copying its features rather than drawing the person.
- quality against ground truth: SynthScenes.transfer(A, B) is exactly "A in B's pose" but drawn
  on A's background with A's camera, whereas IP-GAN takes background and camera from B as well.
  So the comparison that means something is INSIDE the person (the ground truth's mask): L1 / SSIM
  of x' vs transfer(A, B) on its mask, next to two controls on the same pixels, B's real image
  (right pose, wrong person: what copying the attribute image scores) and A's real image (right
  person, wrong pose). Where the two silhouettes differ (A's person xor B's: the pixels whose
  content depends on whose pose is drawn) L1 of x' to B and to A says whose pose x' follows
  without a keypoint model. Full-image numbers are given against B's real image (the background x'
  should reproduce) and against the ground truth (background mismatch included, for reference).

Augmentation: write_augmented_set writes a copy of a Market-layout set whose training split has
one swap per training image added (identity A, attributes of a random training image of another
identity), with B's keypoints in the sidecar (x' is meant to be in B's pose), for re-ID training
against the set without them (bench/gen_ipgan.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from keyreid.data.loader import read_image
from keyreid.errors import DataError
from keyreid.generation.pose import from_unit_range, to_unit_range

# ---------------------------------------------------------------------------------- inputs


def load_unit_images(paths: Sequence[str | Path], height: int, width: int) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1], each image resized (bilinear) to height x width."""
    out = []
    for p in paths:
        im = read_image(str(p))
        if im.size != (width, height):
            im = im.resize((width, height), Image.BILINEAR)
        out.append(to_unit_range(np.asarray(im)))
    return torch.stack(out) if out else torch.zeros(0, 3, height, width)


def unit_array(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    """A uint8 [h, w, 3] array (a render) as [3, H, W] in [-1, 1] at the generation size."""
    im = Image.fromarray(image)
    if im.size != (width, height):
        im = im.resize((width, height), Image.BILINEAR)
    return to_unit_range(np.asarray(im))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.BILINEAR)
    return np.asarray(im) >= 128


def scale_keypoints(kp: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Pixel-centre scaling ((x + 0.5) * s - 0.5), as PairDataset resizes keypoints."""
    kp = np.array(kp, dtype=np.float32, copy=True)
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    kp[:, 0] = (kp[:, 0] + 0.5) * sx - 0.5
    kp[:, 1] = (kp[:, 1] + 0.5) * sy - 0.5
    return kp


def swap_pairs(scenes, split: str, count: int, seed: int) -> list[tuple[str, str]]:
    """`count` seeded pairs (A, B) of labelled people of `split` with different identities; every
    A distinct while there are enough images."""
    paths = scenes.paths(split)
    pids = np.array([scenes.pid(p) for p in paths])
    if len(set(pids.tolist())) < 2:
        raise DataError(scenes.root, f"split {split!r} needs people of at least two identities")
    rng = np.random.default_rng([seed, 2018])
    order = rng.permutation(len(paths))
    pairs = []
    for k in range(count):
        a = int(order[k % len(order)])
        others = np.flatnonzero(pids != pids[a])
        b = int(others[rng.integers(len(others))])
        pairs.append((paths[a], paths[b]))
    return pairs


@torch.no_grad()
def generate_swaps(method, identity_images: torch.Tensor, attribute_images: torch.Tensor,
                   batch_size: int = 64) -> torch.Tensor:
    """method.render(source=identity images, other=attribute images) in batches, on CPU."""
    device = next(method.parameters()).device
    out = []
    for i in range(0, len(identity_images), batch_size):
        out.append(method.render(identity_images[i:i + batch_size].to(device),
                                 other=attribute_images[i:i + batch_size].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros_like(identity_images)


# ---------------------------------------------------------------------------------- measuring


def keypoint_distance(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per image: mean pixel distance over joints visible in both; NaN when none is."""
    both = (pred[..., 2] > 0) & (target[..., 2] > 0)
    d = np.linalg.norm(pred[..., :2] - target[..., :2], axis=-1)
    with np.errstate(invalid="ignore"):
        return np.where(both.any(1), (d * both).sum(1) / np.maximum(both.sum(1), 1), np.nan)


def measure_swaps(method, root: str | Path, pairs: Sequence[tuple[str, str]], height: int, width: int,
                  probe_checkpoint: Optional[str | Path] = None, reid_checkpoint: Optional[str | Path] = None,
                  batch_size: int = 64) -> tuple[dict, dict[str, torch.Tensor]]:
    """(numbers, images) for swaps of `pairs` (rel paths of a synthetic set at `root`).

    images: "identity" (A), "attributes" (B), "generated" (x'), "ground truth" (transfer(A, B)),
    each [N, 3, H, W] in [-1, 1], for grids."""
    from keyreid.data.synthetic import SynthScenes
    from keyreid.generation import metrics as M

    root = Path(root)
    scenes = SynthScenes(root)
    a_paths, b_paths = [p for p, _ in pairs], [q for _, q in pairs]
    x_a = load_unit_images([root / p for p in a_paths], height, width)
    x_b = load_unit_images([root / p for p in b_paths], height, width)
    fake = generate_swaps(method, x_a, x_b, batch_size)
    truths = [scenes.transfer(a, b) for a, b in pairs]
    gt = torch.stack([unit_array(t.image, height, width) for t in truths])
    masks = [resize_mask(t.mask, height, width) for t in truths]

    def mean_metric(fn, x, y, use_mask: bool) -> float:
        return float(np.mean([fn(x[i], y[i], masks[i] if use_mask else None) for i in range(len(x))]))

    out: dict = {"pairs": len(pairs), "size": [height, width]}
    out["person_l1"] = {"generated": mean_metric(M.l1, fake, gt, True),
                        "attribute image (control)": mean_metric(M.l1, x_b, gt, True),
                        "identity image (control)": mean_metric(M.l1, x_a, gt, True)}
    out["person_ssim"] = {"generated": mean_metric(M.ssim, fake, gt, True),
                          "attribute image (control)": mean_metric(M.ssim, x_b, gt, True),
                          "identity image (control)": mean_metric(M.ssim, x_a, gt, True)}
    out["full_l1"] = {"generated vs attribute image": mean_metric(M.l1, fake, x_b, False),
                      "generated vs identity image": mean_metric(M.l1, fake, x_a, False),
                      "generated vs ground truth": mean_metric(M.l1, fake, gt, False)}
    out["full_ssim"] = {"generated vs attribute image": mean_metric(M.ssim, fake, x_b, False),
                        "generated vs identity image": mean_metric(M.ssim, fake, x_a, False),
                        "generated vs ground truth": mean_metric(M.ssim, fake, gt, False)}

    # where exactly one of the two people is (A's and B's silhouettes differ): there the attribute
    # image and the identity image disagree about pose (and background), whatever a probe finds
    sil_a = [resize_mask(scenes.render(p).mask, height, width) for p in a_paths]
    sil_b = [resize_mask(scenes.render(p).mask, height, width) for p in b_paths]
    region = [ma ^ mb for ma, mb in zip(sil_a, sil_b)]
    out["silhouette_l1"] = {
        "generated vs attribute image": float(np.nanmean([M.l1(fake[i], x_b[i], region[i]) for i in range(len(pairs))])),
        "generated vs identity image": float(np.nanmean([M.l1(fake[i], x_a[i], region[i]) for i in range(len(pairs))])),
    }
    if probe_checkpoint is not None:
        probe = M.KeypointProbe(probe_checkpoint)
        kp_a = np.stack([scale_keypoints(scenes.render(p).keypoints, _hw(root / p), (height, width))
                         for p in a_paths])
        kp_b = np.stack([t.keypoints for t in truths])  # B's pose geometry (no occluder)
        kp_b = np.stack([scale_keypoints(k, _hw(root / p), (height, width)) for k, p in zip(kp_b, b_paths)])
        found = _batched(probe, fake, batch_size)
        found_real_b = _batched(probe, x_b, batch_size)
        d_b, d_a = keypoint_distance(found, kp_b), keypoint_distance(found, kp_a)
        ok = ~np.isnan(d_b) & ~np.isnan(d_a)
        out["keypoints"] = {
            "pck vs attribute image": float(M.pck(found, kp_b)),
            "pck vs identity image": float(M.pck(found, kp_a)),
            "closer to attribute image (share of pairs)": float(np.mean(d_b[ok] < d_a[ok])) if ok.any() else None,
            "mean px to attribute image": float(np.nanmean(d_b)), "mean px to identity image": float(np.nanmean(d_a)),
            "probe on real attribute images (ceiling), pck": float(M.pck(found_real_b, kp_b)),
            "pck of identity vs attribute keypoints (floor)": float(M.pck(kp_a, kp_b)),
        }
    if reid_checkpoint is not None:
        judge = M.IdentityJudge.for_dataset(reid_checkpoint, root)
        pid_a = [scenes.pid(p) for p in a_paths]
        pid_b = [scenes.pid(p) for p in b_paths]
        cam_a = [_camera(p) for p in a_paths]
        cam_b = [_camera(p) for p in b_paths]
        # x' shows B's camera scene: gallery images of the claimed identity in B's camera are left
        # out (the Market rule applied to the camera x' was drawn in), so a shared background
        # cannot answer for either identity; the real A images follow the usual rule (A's camera)
        out["identity"] = {
            "rank1 identity image's id": judge.rank1(fake, pid_a, cam_b),
            "rank1 attribute image's id": judge.rank1(fake, pid_b, cam_b),
            "rank1 of the real identity images (ceiling)": judge.rank1(x_a, pid_a, cam_a),
            "chance": 1.0 / len(set(judge.gallery_pids.tolist())),
            "closer to identity image's id than to attribute image's (share of pairs)":
                identity_choice(judge, fake, pid_a, pid_b, cam_b),
        }
    return out, {"identity": x_a, "attributes": x_b, "generated": fake, "ground truth": gt}


def identity_choice(judge, images: torch.Tensor, pid_a: Sequence[int], pid_b: Sequence[int],
                    cam: Sequence[int]) -> float:
    """Share of images whose nearest gallery image of identity A is nearer than the nearest of
    identity B (gallery images of either identity from camera `cam` left out): a two-way choice,
    0.5 by chance, that still says which identity a blurry swap carries when rank-1 over every
    gallery identity is 0 for both."""
    feats = np.asarray(judge.model.embed(list(from_unit_range(images)), batch_size=judge.batch_size), np.float32)
    d = judge.distances(feats)
    g_pid, g_cam = judge.gallery_pids, judge.gallery_camids
    wins = []
    for i in range(len(feats)):
        allowed = np.ones(len(g_pid), bool) if g_cam is None else g_cam != cam[i]
        da = d[i][(g_pid == pid_a[i]) & allowed]
        db = d[i][(g_pid == pid_b[i]) & allowed]
        if len(da) and len(db):
            wins.append(float(da.min() < db.min()))
    return float(np.mean(wins)) if wins else float("nan")


def _camera(rel_path: str) -> int:
    """0-based camera of a Market-style name (PPPP_cCsS_...), as keyreid's reader numbers it."""
    from keyreid.data.datasets.market1501 import NAME_PATTERN

    m = NAME_PATTERN.match(Path(rel_path).name)
    if m is None:
        raise DataError(rel_path, "not a Market-style image name (PPPP_cCsS_FFFFFF_NN.jpg)")
    return int(m.group(2)) - 1


def _hw(path: Path) -> tuple[int, int]:
    from keyreid.data.images import image_size

    w, h = image_size(path)
    return h, w


def _batched(probe, images: torch.Tensor, batch_size: int) -> np.ndarray:
    return np.concatenate([np.asarray(probe(images[i:i + batch_size]))
                           for i in range(0, len(images), batch_size)])


def save_grid(path: str | Path, columns: dict[str, torch.Tensor], rows: int = 8) -> Path:
    """A PNG: one row per pair, one column per entry of `columns` (in order), 2 px gaps."""
    from keyreid.utils.io import atomic_write

    cols = [from_unit_range(t[:rows]) for t in columns.values()]
    n, h, w = cols[0].shape[0], cols[0].shape[1], cols[0].shape[2]
    gap = 2
    canvas = np.full((n * (h + gap) - gap, len(cols) * (w + gap) - gap, 3), 255, np.uint8)
    for j, col in enumerate(cols):
        for i in range(n):
            canvas[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = col[i]
    path = Path(path)
    atomic_write(path, lambda tmp: Image.fromarray(canvas).save(tmp, format="PNG"))
    return path


# ---------------------------------------------------------------------------------- augmentation

AUGMENT_DONE = "augmented.json"


def write_augmented_set(method, data_root: str | Path, out_root: str | Path, seed: int,
                        exclude_pids: Sequence[int] = (), per_image: int = 1, batch_size: int = 64,
                        jpeg_quality: int = 95) -> dict:
    """A Market-layout copy of `data_root` at `out_root` whose bounding_box_train/ also holds
    `per_image` swaps per training image (identity: that image; attributes: a seeded random
    training image of another identity, camera number taken from it), named
    PPPP_cC s9_FFFFFF_00.jpg with frames counting from 900000, their keypoints (the attribute
    image's, scaled) appended to keypoints.jsonl. query/ and bounding_box_test/ are symlinks, the
    original training images symlinked files; augmented.json lists every swap as [generated
    name, identity image, attribute image]. Identities in `exclude_pids` (the re-ID run's
    validation identities) neither get swaps nor lend attributes. Cached: a finished copy
    (out_root/augmented.json) is reused; an unfinished one is rebuilt."""
    from keyreid.data.datasets import build_dataset

    data_root, out_root = Path(data_root).resolve(), Path(out_root)
    done = out_root / AUGMENT_DONE
    if done.is_file():
        return json.loads(done.read_text())
    sidecar = data_root / "keypoints.jsonl"
    ds = build_dataset("market1501", data_root, keypoints=sidecar if sidecar.is_file() else None)
    excluded = set(int(p) for p in exclude_pids)
    train = [s for s in ds.train if s.pid not in excluded]
    if len({s.pid for s in train}) < 2:
        raise DataError(data_root, "augmentation needs training images of at least two identities")
    if out_root.exists():
        shutil.rmtree(out_root)   # an unfinished copy of ours (no augmented.json)
    tmp = out_root.with_name(out_root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "bounding_box_train").mkdir(parents=True)
    for d in ("query", "bounding_box_test"):
        os.symlink(data_root / d, tmp / d)
    for s in ds.train:
        os.symlink(Path(s.path).resolve(), tmp / "bounding_box_train" / Path(s.path).name)

    h, w = method.info.height, method.info.width
    rng = np.random.default_rng([seed, 31])
    pids = np.array([s.pid for s in train])
    jobs = []
    for _ in range(per_image):
        for i, s in enumerate(train):
            others = np.flatnonzero(pids != s.pid)
            jobs.append((i, int(others[rng.integers(len(others))])))
    lines = sidecar.read_text().splitlines() if sidecar.is_file() else [
        json.dumps({"format": "keyreid-keypoints", "version": 1, "skeleton": "coco17"})]
    frame = 900000
    made = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        x_a = load_unit_images([train[i].path for i, _ in chunk], h, w)
        x_b = load_unit_images([train[j].path for _, j in chunk], h, w)
        images = from_unit_range(generate_swaps(method, x_a, x_b, batch_size))
        for (i, j), img in zip(chunk, images):
            a, b = train[i], train[j]
            name = f"{a.pid:04d}_c{b.camid + 1}s9_{frame:06d}_00.jpg"
            frame += 1
            made.append([name, Path(a.path).name, Path(b.path).name])
            Image.fromarray(img).save(tmp / "bounding_box_train" / name, format="JPEG", quality=jpeg_quality)
            if b.keypoints is not None:
                kp = scale_keypoints(b.keypoints, _hw(Path(b.path)), (h, w))
                lines.append(json.dumps({"path": f"bounding_box_train/{name}",
                                         "keypoints": np.round(kp, 3).tolist()}))
    (tmp / "keypoints.jsonl").write_text("\n".join(lines) + "\n")
    summary = {"source": str(data_root), "real_train_images": len(ds.train), "generated": len(jobs),
               "excluded_identities": sorted(excluded), "seed": seed, "per_image": per_image,
               "size": [h, w], "swaps": made}
    (tmp / AUGMENT_DONE).write_text(json.dumps(summary, indent=2))
    tmp.rename(out_root)
    return summary


__all__ = ["generate_swaps", "load_unit_images", "measure_swaps", "save_grid", "swap_pairs",
           "write_augmented_set"]
