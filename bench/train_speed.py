"""Training and feature-extraction speed of each head against bnneck on the same backbone and batch.

    .venv/bin/python bench/train_speed.py                                  # resnet18 + mobilenetv2, 128x64, batch 32, CPU
    .venv/bin/python bench/train_speed.py --backbone resnet50 --height 256 --width 128 --batch 16
    .venv/bin/python bench/train_speed.py --variants                       # also kae option variants
    .venv/bin/python bench/train_speed.py --markdown bench/RESULTS.md      # append the tables there

A training step is what Trainer.train_step does: forward, the config's losses (CE 0.1 + batch-hard
triplet 0.3 + the head's heatmap losses; + the adaptive-L2 penalty for "kae+al2"), backward, Adam
step. Extraction is eval mode under no_grad. Inputs are random tensors with PK labels and random
keypoints (70% visible), so no dataset is needed. The heads are timed round-robin (one step of each
head in turn), so a slow spell on a shared machine hits every head alike; the table shows the
median over --steps after --warmup steps.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from keyreid.config import Config, ModelConfig
from keyreid.data.keypoints import get_skeleton
from keyreid.engine.trainer import Criterion
from keyreid.models.build import build_model
from keyreid.regularizers import AdaptiveL2

# (label, head, head_options, adaptive_l2)
HEADS = [
    ("bnneck", "bnneck", {}, False),
    ("kae", "kae", {}, False),
    ("aacn", "aacn", {}, False),
    ("pabr", "pabr", {}, False),
    ("kae+al2", "kae", {}, True),
    ("stripes", "stripes", {}, False),  # AdaptiveReID's model: two copies of the last stage
]
# Where kae's time goes: decoder kind and resolution, group width
# (defaults: deconv decoder, upsample 2, c 32, global 128).
KAE_VARIANTS = [
    ("kae subpixel", "kae", {"decoder": "subpixel"}, False),
    ("kae up=1", "kae", {"upsample": 1}, False),
    ("kae up=4", "kae", {"upsample": 4}, False),
    ("kae c=16", "kae", {"group_channels": 16}, False),
    ("kae hm-pool", "kae", {"pooling": "heatmap"}, False),
    ("kae no-hm-loss", "kae", {}, "nohm"),
]


class Runner:
    """One model with its criterion and optimizer, stepping on a fixed random batch."""

    def __init__(self, label, head, options, mode, backbone, batch, device, skeleton, num_classes,
                 channels_last=False):
        self.label = label
        cfg = Config()
        cfg.model = ModelConfig(backbone=backbone, pretrained=None, last_stride=1, head=head,
                                head_options=dict(options), channels_last=channels_last)
        if mode == "nohm":
            cfg.loss.heatmap_weight = 0.0  # model cost without the auxiliary loss
        self.model = build_model(cfg.model, num_classes, skeleton).to(device)
        self.criterion = Criterion(cfg, num_classes, self.model.embedding_dim).to(device)
        self.reg = AdaptiveL2(self.model, A=0.005, omega=1.0) if mode is True else None
        params = list(self.model.parameters()) + list(self.criterion.parameters())
        if self.reg is not None:
            groups = self.reg.param_groups(self.model, 3.5e-4, extra=list(self.criterion.parameters()))
            self.opt = torch.optim.Adam(groups, lr=3.5e-4, weight_decay=0.0)
        else:
            self.opt = torch.optim.Adam(params, lr=3.5e-4, weight_decay=5e-4)
        self.batch = batch
        self.uses_kp = self.model.uses_keypoints
        self.train_times: list[float] = []
        self.eval_times: list[float] = []

    def params_m(self) -> float:
        return sum(p.numel() for p in self.model.head.parameters()) / 1e6

    def train_step(self) -> float:
        images, labels, keypoints = self.batch
        self.model.train()
        t0 = time.perf_counter()
        out = self.model(images)
        loss, _ = self.criterion(self.model, out, labels, keypoints if self.uses_kp else None,
                                 tuple(images.shape[-2:]), 0)
        if self.reg is not None:
            loss = loss + self.reg.penalty()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        _sync(images.device)
        return time.perf_counter() - t0

    @torch.no_grad()
    def eval_step(self) -> float:
        images = self.batch[0]
        self.model.eval()
        t0 = time.perf_counter()
        self.model(images)
        _sync(images.device)
        return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(batch, height, width, skeleton, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=g)
    k_per_id = 4 if batch % 4 == 0 else 2
    labels = torch.arange(batch // k_per_id).repeat_interleave(k_per_id)
    labels = torch.cat([labels, labels[: batch - len(labels)]])
    kp = torch.rand(batch, skeleton.num_keypoints, 3, generator=g)
    kp[..., 0] *= width - 1
    kp[..., 1] *= height - 1
    kp[..., 2] = (kp[..., 2] < 0.7).float()
    return images.to(device), labels.to(device), kp.to(device)


def bench_backbone(args, backbone: str) -> list[dict]:
    device = torch.device(args.device)
    skeleton = get_skeleton(args.skeleton)
    torch.manual_seed(0)
    batch = random_batch(args.batch, args.height, args.width, skeleton, device)
    heads = HEADS + (KAE_VARIANTS if args.variants else [])
    if args.heads:
        keep = [h.strip() for h in args.heads.split(",")]
        heads = [h for h in heads if h[0] == "bnneck" or h[0] in keep]  # bnneck: the reference
    runners = [Runner(*h, backbone, batch, device, skeleton, args.num_classes, args.channels_last)
               for h in heads]
    for i in range(args.warmup + args.steps):
        for r in runners:  # round-robin: noise from other users is spread over every head
            t = r.train_step()
            if i >= args.warmup:
                r.train_times.append(t)
    for i in range(args.warmup + args.steps):
        for r in runners:
            t = r.eval_step()
            if i >= args.warmup:
                r.eval_times.append(t)
    base = runners[0].train_times
    rows = []
    for r in runners:
        tm, em = statistics.median(r.train_times), statistics.median(r.eval_times)
        # Paired: each round's step against bnneck's step of the same round, so a slow spell
        # (this is a VM with noisy neighbours) cancels out instead of landing on one head.
        ratio = statistics.median(t / b for t, b in zip(r.train_times, base))
        rows.append({"head": r.label, "dim": r.model.embedding_dim, "head_params_m": r.params_m(),
                     "step_ms": 1000 * tm, "min_ms": 1000 * min(r.train_times),
                     "overhead": 100 * (ratio - 1),
                     "train_ips": args.batch / tm, "extract_ips": args.batch / em,
                     "spread": 100 * (max(r.train_times) - min(r.train_times)) / tm})
    return rows


def table(rows, args, backbone) -> str:
    lines = [f"**{backbone}**, {args.height}x{args.width}, batch {args.batch}, {args.device}, "
             f"{'channels_last, ' if args.channels_last else ''}{args.threads or torch.get_num_threads()} "
             f"threads, {args.steps} steps after {args.warmup} warmup",
             "",
             "| head | emb dim | head params (M) | train step (ms, median) | fastest step (ms) "
             "| overhead vs bnneck (median of paired ratios) | train img/s | extract img/s "
             "| step range (% of median) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        over = "-" if r["head"] == "bnneck" else f"{r['overhead']:+.1f}%"
        lines.append(f"| {r['head']} | {r['dim']} | {r['head_params_m']:.2f} | {r['step_ms']:.0f} "
                     f"| {r['min_ms']:.0f} | {over} "
                     f"| {r['train_ips']:.1f} | {r['extract_ips']:.1f} | {r['spread']:.0f} |")
    return "\n".join(lines)


def machine() -> str:
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
        mem = f"{mem_kb / 2**20:.1f} GiB RAM"
    except (OSError, StopIteration):
        mem = "RAM unknown"
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{os.cpu_count()} CPU cores (nproc), {model}, {mem}{gpu}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}; "
            f"{_dt.date.today().isoformat()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet18,mobilenetv2", help="comma-separated build_backbone names")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skeleton", default="coco17", help="keypoint layout (coco17: 17, veri20: 20)")
    ap.add_argument("--num-classes", type=int, default=751)
    ap.add_argument("--channels-last", action="store_true", help="channels_last memory format (as the demo)")
    ap.add_argument("--variants", action="store_true", help="also time kae option variants")
    ap.add_argument("--heads", default="", help="only these labels (comma-separated), e.g. 'kae,kae up=1'")
    ap.add_argument("--markdown", type=Path, help="append the tables to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    out = []
    for backbone in args.backbone.split(","):
        rows = bench_backbone(args, backbone.strip())
        text = table(rows, args, backbone.strip())
        print("\n" + text, flush=True)
        out.append(text)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n\n".join(out) + "\n\n")


if __name__ == "__main__":
    main()
