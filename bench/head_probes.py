"""What a trained part head has learned, measured on the test split of its dataset.

    .venv/bin/python bench/head_probes.py runs/heads/seed0/aacn/best.pt [more checkpoints]
    .venv/bin/python bench/head_probes.py CKPT... --figures docs/heads --figures-only   # pictures

Per checkpoint, one table of:
- test mAP / R1 of the post-BN embedding (what retrieval uses) and of the pre-BN feature, and for
  aacn of the global slice alone and the part slice alone;
- mAP of each part block alone (which parts carry identity);
- PCK of the predicted keypoint heatmaps (argmax cell centre within 0.1 / 0.2 of the image height
  of a visible true keypoint), against a pose prior that predicts every keypoint at its mean
  position, so that "localises" means better than knowing where a keypoint usually is;
- for aacn: the share of each max-normalised part map's mass inside its rendered target (band or
  box), against the same share for a uniform map (the target's area share);
- a swap test of the part blocks of the embedding: block k of a query is replaced by block k of a
  donor query of another identity (same slot) or by another block of the donor (other slot). If
  the blocks are part-aligned, the same-slot swap moves the query towards the donor's gallery
  images more than the other-slot swap does; if the parts are copies of one global feature, the
  two moves are alike.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from keyreid.data.loader import ImageDataset
from keyreid.engine.data import prepare_data
from keyreid.evaluation.distance import distance_matrix
from keyreid.evaluation.split import reid_metrics
from keyreid.inference import load_model
from keyreid.models.targets import box_maps, limb_maps


@torch.no_grad()
def forward_all(lm, samples, k: int, batch: int = 128) -> dict:
    ds = ImageDataset(samples, lm.transform, k)
    keep: dict[str, list] = {}
    for start in range(0, len(ds), batch):
        items = [ds[i] for i in range(start, min(len(ds), start + batch))]
        out = lm.model(torch.stack([it["image"] for it in items]).to(lm.device))
        pieces = {"embedding": out.embedding, "feature": out.feature, "heatmaps": out.heatmaps,
                  "part_features": out.part_features, "keypoints": torch.stack([it["keypoints"] for it in items])}
        for name, m in out.maps.items():
            pieces[f"map_{name}"] = m
        for name, v in pieces.items():
            if v is not None:
                keep.setdefault(name, []).append(v.float().cpu())
    return {name: torch.cat(v) for name, v in keep.items()}


def metrics(q: np.ndarray, g: np.ndarray, query, gallery) -> dict:
    return reid_metrics(distance_matrix(q, g, "cosine"), query, gallery)


def pck(heatmaps: torch.Tensor, keypoints: torch.Tensor, image_hw, fractions=(0.1, 0.2)) -> dict:
    """PCK of argmax cell centres, and of the pose prior (mean true position of each keypoint)."""
    b, k, h, w = heatmaps.shape
    flat = heatmaps.flatten(2).argmax(-1)
    py = (flat // w + 0.5) * image_hw[0] / h
    px = (flat % w + 0.5) * image_hw[1] / w
    vis = keypoints[..., 2] > 0
    tx, ty = keypoints[..., 0], keypoints[..., 1]
    prior_x = (tx * vis).sum(0) / vis.sum(0).clamp_min(1)
    prior_y = (ty * vis).sum(0) / vis.sum(0).clamp_min(1)
    err = ((px - tx) ** 2 + (py - ty) ** 2).sqrt()[vis]
    err_prior = ((prior_x - tx) ** 2 + (prior_y - ty) ** 2).sqrt()[vis]
    out = {}
    for f in fractions:
        t = f * image_hw[0]
        out[f"PCK@{f}"] = float((err <= t).float().mean())
        out[f"prior PCK@{f}"] = float((err_prior <= t).float().mean())
    return out


def attention_mass(maps: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> tuple[float, float]:
    """Share of |map| (max-normalised) inside target > 0.5, over parts with weight > 0; and the
    share a uniform map would have (the target's area share)."""
    m = maps.abs()
    m = m / m.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    inside = (target > 0.5).float()
    share = (m * inside).sum((-2, -1)) / m.sum((-2, -1)).clamp_min(1e-6)
    area = inside.mean((-2, -1))
    ok = weights > 0
    return float(share[ok].mean()), float(area[ok].mean())


def swap_test(eq: torch.Tensor, eg: torch.Tensor, query, gallery, start: int, block: int,
              seed: int = 0) -> dict:
    """Mean gain in cosine similarity to the donor's gallery images (and loss towards the query's
    own) when one block of the post-BN query embedding comes from a donor of another identity,
    into the same slot or into another slot, averaged over blocks and queries."""
    qp = torch.tensor([s.pid for s in query])
    gp = torch.tensor([s.pid for s in gallery])
    g = torch.nn.functional.normalize(eg.float(), dim=1)
    q = eq.float()
    n = (q.shape[1] - start) // block
    rng = np.random.default_rng(seed)
    donor = torch.as_tensor(rng.permutation(len(q)))
    ok = qp[donor] != qp
    q, donor = q[ok], donor[ok]
    qpid, dpid = qp[ok], qp[donor]
    d = eq.float()[donor]
    own = (gp[None, :] == qpid[:, None]).float()
    dmask = (gp[None, :] == dpid[:, None]).float()

    def sims(x):
        s = torch.nn.functional.normalize(x, dim=1) @ g.T
        return (s * dmask).sum(1) / dmask.sum(1).clamp_min(1), (s * own).sum(1) / own.sum(1).clamp_min(1)

    base_d, base_o = sims(q)
    full_d, full_o = sims(d)
    same, other, same_o, other_o = [], [], [], []
    shift = torch.as_tensor(rng.integers(1, n, size=len(q))) if n > 1 else torch.zeros(len(q), dtype=torch.long)
    for k in range(n):
        lo = start + k * block
        x = q.clone()
        x[:, lo:lo + block] = d[:, lo:lo + block]
        sd, so = sims(x)
        same.append(sd - base_d)
        same_o.append(base_o - so)
        y = q.clone()
        src = start + ((k + shift) % n) * block
        idx = src[:, None] + torch.arange(block)[None, :]
        y[:, lo:lo + block] = torch.gather(d, 1, idx)
        sd, so = sims(y)
        other.append(sd - base_d)
        other_o.append(base_o - so)
    return {"blocks": n, "full swap gain": float((full_d - base_d).mean()),
            "same-slot gain": float(torch.stack(same).mean()), "other-slot gain": float(torch.stack(other).mean()),
            "same-slot loss (own)": float(torch.stack(same_o).mean()),
            "other-slot loss (own)": float(torch.stack(other_o).mean())}


def load(ckpt: Path):
    """(the loaded model, its dataset with keypoints): shared by the probes and the figure."""
    lm = load_model(ckpt, device="cpu")
    return lm, prepare_data(lm.config, need_keypoints=True, notify=lambda m: None)


def probe(ckpt: Path, lm, data) -> list[str]:
    cfg = lm.config
    query, gallery = data.dataset.query, data.dataset.gallery
    k = data.skeleton.num_keypoints
    head = lm.model.head
    fq, fg = forward_all(lm, query, k), forward_all(lm, gallery, k)
    lines = [f"## {ckpt}", "", "| probe | R1 | mAP |", "|---|---|---|"]

    def row(name, q, g):
        m = metrics(q.numpy(), g.numpy(), query, gallery)
        lines.append(f"| {name} | {100 * m['R1']:.1f} | {100 * m['mAP']:.1f} |")
        return m

    row("embedding (post-BN)", fq["embedding"], fg["embedding"])
    row("feature (pre-BN)", fq["feature"], fg["feature"])
    gdim = getattr(head, "global_dim", None)
    if cfg.model.head == "aacn" and gdim is None:
        gdim = head.global_reduce[0].out_channels
    if gdim:
        row("global slice (post-BN)", fq["embedding"][:, :gdim], fg["embedding"][:, :gdim])
        row("part slice (post-BN)", fq["embedding"][:, gdim:], fg["embedding"][:, gdim:])
    if "part_features" in fq:
        pq, pg = fq["part_features"], fg["part_features"]
        per = [metrics(pq[:, p].numpy(), pg[:, p].numpy(), query, gallery)["mAP"] for p in range(pq.shape[1])]
        lines += ["", "mAP of each part block alone (%): " + ", ".join(f"{100 * v:.1f}" for v in per)]
        # the part blocks follow the global slice (aacn: global_dim, kae: global_channels)
        start = gdim or (head.global_channels if cfg.model.head == "kae" else 0)
        sw = swap_test(fq["embedding"], fg["embedding"], query, gallery, start, pq.shape[2])
        lines += ["", "swap test (cosine to the donor's gallery, x1000; per block, mean over blocks): " +
                  ", ".join(f"{n} {1000 * v:.2f}" if n != "blocks" else f"{n} {v}" for n, v in sw.items())]
    hw = (cfg.data.height, cfg.data.width)
    if "heatmaps" in fq:
        kp = torch.cat([fq["keypoints"], fg["keypoints"]])
        res = pck(torch.cat([fq["heatmaps"], fg["heatmaps"]]), kp, hw)
        lines += ["", "keypoint heatmaps: " + ", ".join(f"{n} {100 * v:.1f}" for n, v in res.items())]
        if "map_nonrigid" in fq:
            size = tuple(fq["map_nonrigid"].shape[-2:])
            nt, nw = limb_maps(kp, head.limbs, hw, size, head.limb_sigma)
            rt, rw = box_maps(kp, head.rigid, hw, size)
            for name, t, w in (("nonrigid", nt, nw), ("rigid", rt, rw)):
                share, area = attention_mass(torch.cat([fq[f"map_{name}"], fg[f"map_{name}"]]), t, w)
                lines.append(f"{name} attention: {100 * share:.1f}% of the mass inside the target "
                             f"(uniform map: {100 * area:.1f}%)")
    return lines


@torch.no_grad()
def heatmap_figure(ckpt: Path, lm, data, out_png: Path, n: int = 6) -> Path:
    """The checkpoint's predicted keypoint heatmaps on n test queries (fixed picks), true keypoints
    as crosses: the picture of whether its maps localise."""
    from keyreid.viz.heatmaps import plot_heatmap_overlays

    query = data.dataset.query
    picks = [query[i] for i in np.random.default_rng(0).choice(len(query), size=min(n, len(query)), replace=False)]
    ds = ImageDataset(picks, lm.transform, data.skeleton.num_keypoints)
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items])
    out = lm.model(images)
    if out.heatmaps is None:
        raise SystemExit(f"{ckpt}: head {lm.config.model.head} predicts no keypoint heatmaps")
    tf = lm.transform.cfg
    png = plot_heatmap_overlays(images, out.heatmaps.float(), data.skeleton, out_png, mean=tf.mean, std=tf.std,
                                 keypoints=torch.stack([it["keypoints"] for it in items]).numpy(), detail=None,
                                 title=f"{ckpt.parent.name}: predicted keypoint heatmaps (crosses: truth)")
    # 2/3 size and a 128-colour palette: ~70 KB instead of ~750 KB, small enough for docs/
    from PIL import Image

    im = Image.open(png).convert("RGB")
    im = im.resize((im.width * 2 // 3, im.height * 2 // 3), Image.LANCZOS)
    im.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--figures", type=Path, default=None,
                    help="also draw each checkpoint's heatmaps on test queries into DIR/<run>.png")
    ap.add_argument("--figures-only", action="store_true", help="only the figures, no probes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for ckpt in args.checkpoints:
        lm, data = load(ckpt)
        if not args.figures_only:
            print("\n".join(probe(ckpt, lm, data)) + "\n")
        if args.figures is not None:
            print(f"figure: {heatmap_figure(ckpt, lm, data, args.figures / f'{ckpt.parent.name}.png')}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
