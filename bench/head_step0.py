"""What a part head sends the backbone, and what its feature looks like, on a few training batches.

    .venv/bin/python bench/head_step0.py --head aacn [--set model.head_options={...}] [--weights best.pt]

configs/demo.yaml with the given head, on PK batches of the demo's training split (train mode, the
augmentation of training). Per loss (id, metric, each map loss): its value and the norm of its
gradient on the backbone's weights alone, so one can see which loss drives the shared layers. Then
the pre-BN feature: norm of the global slice and of the part slice, the spread of the pairwise
distances the triplet loss sees, and for heads with parts how alike the parts of one image are
(cosine between the part vectors of the same image) against the same part in other images, and the
attention's coverage (mean of the max-normalised map: 1 = uniform, a part is then a global copy).
With --weights the trained model is measured instead of the initial one.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from keyreid.config import load_config
from keyreid.demo.run import DEMO_CONFIG
from keyreid.engine.trainer import Trainer


def grad_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum(((g.float() ** 2).sum() for g in grads if g is not None), torch.zeros(()))))


def pair_stats(x: torch.Tensor, labels: torch.Tensor) -> str:
    d = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    off = ~torch.eye(len(x), dtype=torch.bool)
    pos, neg = d[same & off], d[~same]
    return (f"norm {x.norm(dim=1).mean():.2f}, pos dist {pos.mean():.3f} +- {pos.std():.3f}, "
            f"neg dist {neg.mean():.3f} +- {neg.std():.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head", default="aacn")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--epoch", type=int, default=0, help="epoch passed to the losses (pose_epochs)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(DEMO_CONFIG, [f"model.head={args.head}", f"output_dir={tmp}", "data.workers=0",
                                        *args.overrides])
        tr = Trainer(cfg, resume=False, show_progress=False)
    if args.weights:
        tr.model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=False)["model"])
    model, crit = tr.model, tr.criterion
    model.train()
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    head = [p for p in model.head.parameters() if p.requires_grad]
    tr.sampler.set_epoch(0)
    loader = DataLoader(tr.train_set, batch_sampler=tr.sampler, num_workers=0)
    for i, batch in enumerate(loader):
        if i >= args.batches:
            break
        images, labels, kp = batch["image"], batch["label"], batch.get("keypoints")
        out = model(images)
        hw = tuple(images.shape[-2:])
        parts = {}
        if crit.id_loss is not None:
            parts["id"] = crit.id_loss(out.logits, labels)
        if crit.metric_loss is not None:
            parts["metric"] = crit.metric_loss(out.feature, labels)
        if kp is not None:
            parts.update(model.keypoint_losses(out, kp, hw, cfg.loss.heatmap_sigma, epoch=args.epoch))
        reid = sum(v for k, v in parts.items() if k in ("id", "metric"))
        maps = sum((v for k, v in parts.items() if k not in ("id", "metric")), torch.zeros(()))
        print(f"batch {i}: " + ", ".join(f"{k} {float(v.detach()):.3f}" for k, v in parts.items()))
        rows = [(k, v) for k, v in parts.items()] + [("re-ID (id+metric)", reid)]
        if maps.requires_grad:
            rows.append(("maps (all map losses)", maps))
        for k, v in rows:
            print(f"  grad {k:22s} backbone {grad_norm(v, backbone):8.2f}   head {grad_norm(v, head):8.2f}")
        f = out.feature.detach()
        print("  feature (pre-BN):", pair_stats(f, labels))
        gdim = getattr(model.head, "global_dim", 0)
        if gdim and out.part_features is not None:
            print("  global slice:    ", pair_stats(f[:, :gdim], labels))
            print("  part slice:      ", pair_stats(f[:, gdim:], labels))
        if out.part_features is not None:
            p = F.normalize(out.part_features.detach().float(), dim=-1)       # [B, P, c]
            within = torch.einsum("bpc,bqc->bpq", p, p)
            P = p.shape[1]
            off = ~torch.eye(P, dtype=torch.bool)
            across = torch.einsum("bpc,dpc->pbd", p, p)                        # same part, two images
            offb = ~torch.eye(p.shape[0], dtype=torch.bool)
            print(f"  part cosine: two parts of one image {within[:, off].mean():.3f}, "
                  f"one part of two images {across[:, offb].mean():.3f}")
        if out.part_weights is not None:
            w = out.part_weights.detach()
            print(f"  part weights: min {w.min():.2f} max {w.max():.2f} std over parts {w.std(1).mean():.2f}")
        if out.maps:
            m = torch.cat([out.maps[k].detach() for k in out.maps], 1).abs()
            m = m / m.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
            print(f"  attention coverage (mean of max-normalised map): {m.mean():.3f} "
                  f"(per kind: " + ", ".join(f"{k} {(out.maps[k].detach().abs() / out.maps[k].detach().abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)).mean():.3f}" for k in out.maps) + ")")
        print(f"  feature map {tuple(out.heatmaps.shape[-2:]) if out.heatmaps is not None else ''}")


if __name__ == "__main__":
    main()
