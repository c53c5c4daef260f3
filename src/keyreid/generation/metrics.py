"""Numbers for generated people, measured against ground truth the papers never had.

The synthetic set re-renders any of its people in any other image's pose
(keyreid.data.synthetic.paired.SynthScenes.transfer), so a pose-transfer method can be scored
against the true image of that person in that pose, not only by a perceptual score:

- pixels: L1 and SSIM of the generated image against the true rendering, over the whole image and
  inside the true person mask (the background is the source's, which some methods never see);
- pose: keypoints a trained keypoint model (a kae head, KeypointProbe) finds on the generated
  image, PCK against the target pose and against the source pose (a copy of the source scores
  high on the second);
- identity: rank-1 of the generated images against the real gallery with a keyreid re-ID model.

Every number comes with two references measured on the same pairs: the *control* (the source
image handed back unchanged, what a do-nothing method scores) and the *ground truth* (the true
rendering handed back, what a perfect method scores: the probe's and the re-ID model's own
ceiling). A method is only good where it beats the control.

Images: uint8 arrays are channels-last [..., H, W, 3] in 0..255; float arrays and tensors are
channels-first [..., 3, H, W] in [-1, 1] (the generators' range, keyreid.generation.pose). Every
pixel number is on the 0..1 scale.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from keyreid.errors import KeyreidError

# SSIM as Wang et al. 2004: Gaussian window sigma 1.5 truncated at 3.5 sigma (radius 5, an 11x11
# window), K1 0.01, K2 0.03, population covariances, data range 1; skimage's
# structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
# data_range=1) computes the same (tests/test_generation_metrics.py checks to 1e-4).
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
SSIM_K1, SSIM_K2 = 0.01, 0.03

ImageBatch = Union[np.ndarray, torch.Tensor]


# ---------------------------------------------------------------------------------- pixels
def to_unit_images(x: ImageBatch) -> np.ndarray:
    """float64 [..., H, W, 3] in [0, 1] from uint8 [..., H, W, 3] or float [..., 3, H, W] in [-1, 1]."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.numpy() if x.dtype == torch.uint8 else x.double().numpy()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        if x.ndim < 3 or x.shape[-1] != 3:
            raise ValueError(f"uint8 images must be [..., H, W, 3], got {x.shape}")
        return x.astype(np.float64) / 255.0
    if not np.issubdtype(x.dtype, np.floating) or x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"float images must be [..., 3, H, W] in [-1, 1], got {x.dtype} {x.shape}")
    return np.clip((np.moveaxis(x.astype(np.float64), -3, -1) + 1.0) / 2.0, 0.0, 1.0)


def _pair(a: ImageBatch, b: ImageBatch) -> tuple[np.ndarray, np.ndarray]:
    x, y = to_unit_images(a), to_unit_images(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape[:-1]} vs {y.shape[:-1]} (H, W)")
    return x, y


def _mask_like(mask, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    try:
        return np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"mask of shape {m.shape} does not fit images of [..., H, W] = {shape}") from None


def l1(a: ImageBatch, b: ImageBatch, mask=None) -> float:
    """Mean absolute difference on the 0..1 scale over pixels and channels (pixels inside the
    bool mask [..., H, W] only; NaN when the mask is empty)."""
    x, y = _pair(a, b)
    d = np.abs(x - y).mean(-1)
    if mask is None:
        return float(d.mean())
    m = _mask_like(mask, d.shape)
    return float(d[m].mean()) if m.any() else math.nan


def ssim_map(a: ImageBatch, b: ImageBatch) -> np.ndarray:
    """Per-pixel, per-channel SSIM [..., H, W, 3] (Gaussian window, 'reflect' borders as
    scipy.ndimage, like skimage)."""
    x, y = _pair(a, b)
    if min(x.shape[-3:-1]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least {2 * SSIM_RADIUS + 1} pixels a side, got {x.shape[-3:-1]}")
    sigma = (0.0,) * (x.ndim - 3) + (SSIM_SIGMA, SSIM_SIGMA, 0.0)  # sigma 0: that axis is not filtered

    def blur(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v, sigma, mode="reflect", truncate=SSIM_TRUNCATE)

    ux, uy = blur(x), blur(y)
    vx, vy = blur(x * x) - ux * ux, blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def ssim(a: ImageBatch, b: ImageBatch, mask=None) -> float:
    """Mean SSIM (channel mean) on the 0..1 scale, over the map without its 5-pixel border (the
    window reaches past the image there), as skimage. With a bool mask [..., H, W]: the mean of
    the map inside the mask, the same border left out (an all-True mask gives the unmasked
    value); NaN when nothing of the mask is left. A batch gives the mean over its images."""
    s = ssim_map(a, b).mean(-1)
    r = SSIM_RADIUS
    inner = s[..., r:-r, r:-r]
    if mask is None:
        return float(inner.mean())
    m = _mask_like(mask, s.shape)[..., r:-r, r:-r]
    flat_s = inner.reshape(-1, *inner.shape[-2:])
    flat_m = m.reshape(-1, *m.shape[-2:])
    per = [float(v[k].mean()) for v, k in zip(flat_s, flat_m) if k.any()]
    return float(np.mean(per)) if per else math.nan


# ---------------------------------------------------------------------------------- keypoints
def _refine(line_at, j: np.ndarray, size: int) -> np.ndarray:
    """Sub-cell position of each peak along one axis, from its argmax cell j.

    The vertex of the parabola through the logarithms of three consecutive cells (j and its two
    neighbours; at the map's border the first or last three): exact for a Gaussian peak, whose log
    is a parabola, which is what the heads are trained to predict
    (keyreid.models.targets.keypoint_heatmaps), and at the border too, where the peak's centre
    may lie beyond the last cell centre. Where a value is not positive (an untrained or odd map):
    a quarter cell towards the larger neighbour (the Hourglass rule). Always within j +- 0.5."""
    j = j.astype(np.float64)
    if size < 3:
        return j
    c = np.clip(j, 1, size - 2).astype(np.int64)
    fm, f0, fp = line_at(c - 1), line_at(c), line_at(c + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = (fm > 0) & (f0 > 0) & (fp > 0)
        lm, l0, lp = (np.log(np.where(pos, v, 1.0)) for v in (fm, f0, fp))
        curvature = lm - 2 * l0 + lp
        peaked = pos & (curvature < 0)
        vertex = c + np.where(peaked, (lm - lp) / (2 * np.where(peaked, curvature, -1.0)), 0.0)
    quarter = j + np.where(c == j, 0.25 * np.sign(fp - fm), 0.0)
    return np.clip(np.where(peaked, vertex, quarter), j - 0.5, j + 0.5)


def heatmap_keypoints(heatmaps, image_hw: tuple[int, int]) -> np.ndarray:
    """Keypoints [..., K, 3] = (x, y, peak value) in pixel-centre coordinates of an image of
    `image_hw` that the maps [..., K, h, w] cover: the argmax cell refined to sub-cell precision
    (_refine), mapped as keyreid maps cells to pixels (cell j's centre is input coordinate
    (j + 0.5) * stride - 0.5: keyreid.data.keypoints.heatmap_coordinates inverted)."""
    hm = np.asarray(heatmaps.detach().float().cpu() if isinstance(heatmaps, torch.Tensor) else heatmaps,
                    dtype=np.float64)
    h, w = hm.shape[-2:]
    grid = hm.reshape(-1, h, w)
    idx = grid.reshape(len(grid), -1).argmax(-1)
    rows, cols = np.divmod(idx, w)
    n = np.arange(len(grid))
    x = _refine(lambda c: grid[n, rows, c], cols, w)
    y = _refine(lambda r: grid[n, r, cols], rows, h)
    sy, sx = image_hw[0] / h, image_hw[1] / w
    out = np.stack([(x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5, grid[n, rows, cols]], -1)
    return out.reshape(*hm.shape[:-2], 3).astype(np.float32)


def _as_uint8_list(images) -> list[np.ndarray]:
    if isinstance(images, torch.Tensor) and images.dtype != torch.uint8:
        from keyreid.generation.pose import from_unit_range

        images = from_unit_range(images.reshape(-1, *images.shape[-3:]))
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            images = (to_unit_images(images) * 255.0).round().astype(np.uint8)
        return list(images.reshape(-1, *images.shape[-3:]))
    return [np.asarray(im) for im in images]


def _load(model):
    """A LoadedModel from a checkpoint path (keyreid.load_model, the one loading path); anything
    else (a LoadedModel, or a stand-in with the same methods) is used as it is."""
    if isinstance(model, (str, Path)):
        from keyreid.inference import load_model

        return load_model(model, device="cpu")
    return model


class KeypointProbe:
    """A trained keyreid model with a keypoint head (kae) that finds the keypoints of images.

    Called with images (tensor [B, 3, H, W] in [-1, 1], or uint8 [B, H, W, 3]) it returns
    float32 [B, K, 3]: (x, y, confidence) in pixels of those images; confidence is the
    heatmap's maximum. Images of another size than the model's input are resized as the model's
    own preprocessing does, and the keypoints mapped back (pixel-centre scaling)."""

    def __init__(self, checkpoint, batch_size: int = 64):
        self.model = _load(checkpoint)
        self.batch_size = batch_size
        self.input_hw = tuple(self.model.input_size)
        probe = self.model.forward(torch.zeros(1, 3, *self.input_hw))
        if probe.heatmaps is None or self.model.skeleton is None:
            head = getattr(self.model.config.model, "head", "?")
            raise KeyreidError(f"{checkpoint}: its head ({head}) predicts no keypoint heatmaps; the "
                               "keypoint probe needs a model with a kae head")
        self.skeleton = self.model.skeleton

    def __call__(self, images) -> np.ndarray:
        arrays = _as_uint8_list(images)
        if not arrays:
            return np.zeros((0, self.skeleton.num_keypoints, 3), np.float32)
        out = []
        for i in range(0, len(arrays), self.batch_size):
            chunk = arrays[i:i + self.batch_size]
            maps = self.model.forward(self.model.preprocess(chunk)).heatmaps
            kp = heatmap_keypoints(maps, self.input_hw)
            h, w = chunk[0].shape[:2]
            kp[..., 0] = (kp[..., 0] + 0.5) * w / self.input_hw[1] - 0.5
            kp[..., 1] = (kp[..., 1] + 0.5) * h / self.input_hw[0] - 0.5
            out.append(kp)
        return np.concatenate(out)


def pck(pred, target, threshold: float = 0.1) -> float:
    """Percentage of correct keypoints, as a fraction: over every keypoint visible in the target
    (visibility > 0), pooled over the images, the share whose predicted (x, y) lies within
    threshold * the person's height, where the height is that of the box around the target's
    visible keypoints (max y - min y; for COCO-17 nose/eyes to ankles, about 0.9 of the person).
    Images with fewer than two visible target keypoints have no height and are left out; NaN when
    nothing is left. pred [..., K, >=2], target [..., K, 3]."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape[:-1] != t.shape[:-1] or p.shape[-1] < 2 or t.shape[-1] < 3:
        raise ValueError(f"pck: pred {p.shape} and target {t.shape} must be [..., K, 2+] and [..., K, 3]")
    p, t = p.reshape(-1, *p.shape[-2:]), t.reshape(-1, *t.shape[-2:])
    vis = t[..., 2] > 0
    height = np.where(vis, t[..., 1], -np.inf).max(1) - np.where(vis, t[..., 1], np.inf).min(1)
    usable = (vis.sum(1) >= 2) & (height > 0)
    dist = np.linalg.norm(p[..., :2] - t[..., :2], axis=-1)
    correct = dist <= threshold * height[:, None]
    judged = vis & usable[:, None]
    return float(correct[judged].mean()) if judged.any() else math.nan


# ---------------------------------------------------------------------------------- identity
class IdentityJudge:
    """A keyreid re-ID model and a real gallery: the rank-1 of any images whose identity (and
    camera) is known, with the Market protocol's exclusion: gallery images of the same identity
    AND the same camera as the probe image are left out (so the source image a generated picture
    came from, and its same-camera siblings, cannot answer for it)."""

    def __init__(self, reid, gallery_paths: Sequence, gallery_pids: Sequence[int],
                 gallery_camids: Optional[Sequence[int]] = None, batch_size: int = 128):
        self.model = _load(reid)
        self.batch_size = batch_size
        self.gallery_pids = np.asarray(gallery_pids)
        self.gallery_camids = None if gallery_camids is None else np.asarray(gallery_camids)
        self.gallery = np.asarray(self.model.embed(list(gallery_paths), batch_size=batch_size), np.float32)
        if len(self.gallery) != len(self.gallery_pids):
            raise ValueError(f"{len(self.gallery)} gallery images but {len(self.gallery_pids)} identities")

    @classmethod
    def for_dataset(cls, reid, root: Union[str, Path], dataset: str = "market1501", **kwargs) -> "IdentityJudge":
        """The judge on the gallery split of a dataset keyreid reads (junk already out, as keyreid's
        evaluation has it; distractors in)."""
        from keyreid.data.datasets import build_dataset

        gallery = build_dataset(dataset, root).gallery
        return cls(reid, [s.path for s in gallery], [s.pid for s in gallery], [s.camid for s in gallery], **kwargs)

    def distances(self, features: np.ndarray) -> np.ndarray:
        if getattr(self.model, "distance", "cosine") == "cosine":
            return 1.0 - features @ self.gallery.T  # embed() normalises for cosine models
        sq = (features**2).sum(1)[:, None] + (self.gallery**2).sum(1)[None] - 2 * features @ self.gallery.T
        return np.maximum(sq, 0.0)

    def top_match(self, images, camids: Optional[Sequence[int]] = None,
                  pids: Optional[Sequence[int]] = None) -> np.ndarray:
        """The identity of each image's nearest allowed gallery image."""
        arrays = _as_uint8_list(images)
        if not arrays:
            return np.zeros(0, dtype=self.gallery_pids.dtype)
        d = self.distances(np.asarray(self.model.embed(arrays, batch_size=self.batch_size), np.float32))
        if camids is not None and pids is not None and self.gallery_camids is not None:
            same = (np.asarray(pids)[:, None] == self.gallery_pids[None]) & \
                (np.asarray(camids)[:, None] == self.gallery_camids[None])
            d = np.where(same, np.inf, d)
        return self.gallery_pids[d.argmin(1)]

    def rank1(self, images, pids: Sequence[int], camids: Optional[Sequence[int]] = None) -> float:
        """Fraction of images whose nearest allowed gallery image has their identity."""
        pids = np.asarray(pids)
        if len(pids) == 0:
            return math.nan
        return float((self.top_match(images, camids, pids) == pids).mean())


def identity_rank1(reid, generated, generated_pids: Sequence[int], gallery_paths: Sequence,
                   gallery_pids: Sequence[int], generated_camids: Optional[Sequence[int]] = None,
                   gallery_camids: Optional[Sequence[int]] = None) -> float:
    """Rank-1 of generated images against a real gallery (see IdentityJudge): `reid` is a
    checkpoint path or a LoadedModel; cameras, when both are given, exclude same-identity
    same-camera gallery images."""
    judge = IdentityJudge(reid, gallery_paths, gallery_pids, gallery_camids)
    return judge.rank1(generated, generated_pids, generated_camids)


# ---------------------------------------------------------------------------------- transfer
def transfer_pairs(scenes, count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` (source, target) pairs of the synthetic TEST split, seeded: sources are query
    people, targets test people (query or gallery) of ANOTHER identity, so the pose comes from
    somebody else and copying the target is wrong on identity."""
    rng = np.random.default_rng(seed)
    sources = scenes.paths("query")
    people = sources + scenes.paths("gallery")
    pids = np.array([scenes.pid(p) for p in people])
    pick = rng.choice(len(sources), size=count, replace=count > len(sources))
    pairs = []
    for i in pick:
        others = np.flatnonzero(pids != pids[i])
        pairs.append((sources[i], people[int(rng.choice(others))]))
    return pairs


def _method_hw(method, default: tuple[int, int]) -> tuple[int, int]:
    info = getattr(method, "info", None)
    if info is not None and getattr(info, "height", None):
        return int(info.height), int(info.width)
    if getattr(method, "height", None) and getattr(method, "width", None):
        return int(method.height), int(method.width)
    return default


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)


def _render_batch(method, sources: list[np.ndarray], targets: list[np.ndarray], target_kp: np.ndarray
                  ) -> np.ndarray:
    """uint8 [B, H, W, 3]: method.render(source, target keypoints, other = target image) at the
    method's size, brought back to the images' size."""
    from keyreid.generation.pose import from_unit_range, to_unit_range

    h, w = sources[0].shape[:2]
    mh, mw = _method_hw(method, (h, w))
    src = _resize(torch.stack([to_unit_range(s) for s in sources]), (mh, mw))
    other = _resize(torch.stack([to_unit_range(t) for t in targets]), (mh, mw))
    kp = torch.as_tensor(target_kp, dtype=torch.float32).clone()
    vis = kp[..., 2] > 0
    kp[..., 0] = torch.where(vis, (kp[..., 0] + 0.5) * mw / w - 0.5, kp[..., 0])
    kp[..., 1] = torch.where(vis, (kp[..., 1] + 0.5) * mh / h - 0.5, kp[..., 1])
    out = method.render(src, kp, other).detach().float().cpu()
    return from_unit_range(_resize(out, (h, w)).clamp(-1, 1))


def evaluate_transfer(method, scenes, pairs: Sequence[tuple[str, str]], probe: Optional[Any],
                      reid: Optional[Any], batch_size: int = 32, threshold: float = 0.1,
                      return_images: bool = False) -> dict:
    """Pose transfer measured against the synthetic ground truth.

    For each (source, target) pair of rel paths of `scenes` (a SynthScenes), the method renders
    the source image in the target pose: method.render(source image, target keypoints in the
    generation skeleton, other=target image) (IP-GAN takes pose and background from `other`;
    the others ignore it). The truth is scenes.transfer(source, target); its keypoints (the
    target's geometry, visibility without the target's occluder) are the pose handed over.

    Returns means over the pairs (pixel numbers per image, then averaged; PCK pooled over joints):
      l1_gt, l1_gt_masked, ssim_gt, ssim_gt_masked   generated vs truth (whole image; inside the true mask)
      l1_source, ssim_source                          generated vs the source image (0 / 1: a copy)
      pck_target, pck_source                          probe keypoints on generated vs target / source pose
      id_rank1                                        IdentityJudge rank-1 of generated, source's identity and camera
      control_*                                       the same numbers of the source image itself
      gt_pck_target, gt_pck_source, gt_id_rank1       the same of the true image (the probe's / judge's ceiling)
    `probe` is a KeypointProbe (or any callable images -> [B, 17, 3]) and `reid` an IdentityJudge;
    either None leaves its numbers NaN. return_images adds "generated": uint8 [N, H, W, 3]."""
    from keyreid.data.keypoints import COCO17
    from keyreid.generation.pose import pose_skeleton

    if not pairs:
        raise ValueError("evaluate_transfer: no (source, target) pairs")

    _, to_generation = pose_skeleton(COCO17)
    gen, src, gt, masks, kp_src, kp_tgt, pids, camids = [], [], [], [], [], [], [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        rs = [scenes.render(s) for s, _ in chunk]
        rt = [scenes.render(t) for _, t in chunk]
        truth = [scenes.transfer(s, t) for s, t in chunk]
        pose = np.stack([to_generation(r.keypoints) for r in truth])
        gen.append(_render_batch(method, [r.image for r in rs], [r.image for r in rt], pose))
        src += [r.image for r in rs]
        gt += [r.image for r in truth]
        masks += [r.mask for r in truth]
        kp_src += [r.keypoints for r in rs]
        kp_tgt += [r.keypoints for r in truth]
        pids += [scenes.pid(s) for s, _ in chunk]
        camids += [_camera_of(s) for s, _ in chunk]
    generated = np.concatenate(gen) if gen else np.zeros((0, 1, 1, 3), np.uint8)
    src_a, gt_a = np.stack(src), np.stack(gt)

    def pixels(images: np.ndarray, prefix: str) -> dict:
        return {f"{prefix}l1_gt": float(np.mean([l1(a, b) for a, b in zip(images, gt_a)])),
                f"{prefix}l1_gt_masked": float(np.nanmean([l1(a, b, m) for a, b, m in zip(images, gt_a, masks)])),
                f"{prefix}ssim_gt": float(np.mean([ssim(a, b) for a, b in zip(images, gt_a)])),
                f"{prefix}ssim_gt_masked": float(np.nanmean([ssim(a, b, m) for a, b, m in zip(images, gt_a, masks)]))}

    def pose_and_identity(images: np.ndarray, prefix: str) -> dict:
        out = {f"{prefix}pck_target": math.nan, f"{prefix}pck_source": math.nan, f"{prefix}id_rank1": math.nan}
        if probe is not None:
            found = probe(images)
            out[f"{prefix}pck_target"] = pck(found, np.stack(kp_tgt), threshold)
            out[f"{prefix}pck_source"] = pck(found, np.stack(kp_src), threshold)
        if reid is not None:
            out[f"{prefix}id_rank1"] = reid.rank1(images, pids, camids)
        return out

    result = {"pairs": len(pairs), **pixels(generated, ""),
              "l1_source": float(np.mean([l1(a, b) for a, b in zip(generated, src_a)])),
              "ssim_source": float(np.mean([ssim(a, b) for a, b in zip(generated, src_a)])),
              **pose_and_identity(generated, ""), **pixels(src_a, "control_"),
              **pose_and_identity(src_a, "control_")}
    result.update(pose_and_identity(gt_a, "gt_"))
    if return_images:
        result["generated"] = generated
    return result


def _camera_of(rel_path: str) -> int:
    """Camera index (0-based, as keyreid's Market reader) from a Market name, e.g. 0001_c3s1_... -> 2."""
    name = Path(rel_path).name
    try:
        return int(name.split("_")[1][1:].split("s")[0]) - 1
    except (IndexError, ValueError):
        raise KeyreidError(f"{rel_path}: not a Market-style image name (PID_cCsS_...)") from None


__all__ = ["IdentityJudge", "KeypointProbe", "evaluate_transfer", "heatmap_keypoints", "identity_rank1", "l1",
           "pck", "ssim", "ssim_map", "to_unit_images", "transfer_pairs"]
