"""The training loop: warmup + schedule, AMP on GPU, clipping, validation on held-out training
identities, atomic best/last checkpoints, exact resume, CSV/TensorBoard logs, DDP via torchrun."""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from keyreid.config import Config, save_config, to_dict
from keyreid.data.loader import ImageDataset
from keyreid.data.samplers import PKBatchSampler
from keyreid.engine.checkpoint import load_checkpoint, model_state, save_checkpoint
from keyreid.engine.data import PreparedData, make_transforms, prepare_data
from keyreid.engine.logs import CSVLog, TensorBoard
from keyreid.engine.schedules import lr_factor
from keyreid.evaluation.model_metrics import evaluate_model
from keyreid.inference import card_for, resolve_device
from keyreid.losses import build_loss
from keyreid.models.build import KEYPOINT_HEADS, ReIDModel, build_model
from keyreid.models.output import ModelOutput
from keyreid.regularizers import AdaptiveL2
from keyreid.utils.progress import progress_bar


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Criterion(torch.nn.Module):
    """All training losses of a config, weighted; returns the total and the named parts."""

    def __init__(self, cfg: Config, num_classes: int, embedding_dim: int):
        super().__init__()
        lc = cfg.loss
        self.cfg = lc
        self.id_loss = None
        if lc.id_loss == "cross_entropy":
            self.id_loss = build_loss("cross_entropy", epsilon=lc.label_smoothing)
        elif lc.id_loss == "normalized_softmax":
            self.id_loss = build_loss("normalized_softmax", num_classes=num_classes,
                                      embedding_dim=embedding_dim)
        elif lc.id_loss != "none":
            raise ValueError(f"unknown id_loss {lc.id_loss!r}")
        self.metric_loss = None
        if lc.metric_loss == "triplet":
            self.metric_loss = build_loss("triplet", margin=lc.margin or 0.0, soft_margin=lc.margin is None)
        elif lc.metric_loss in ("ephn_triplet", "ephn"):
            self.metric_loss = build_loss("ephn")
        elif lc.metric_loss == "multi_similarity":
            self.metric_loss = build_loss("multi_similarity")
        elif lc.metric_loss != "none":
            raise ValueError(f"unknown metric_loss {lc.metric_loss!r}")
        self.center = build_loss("center", num_classes=num_classes, feat_dim=embedding_dim) \
            if lc.center_weight > 0 else None

    def forward(self, model: ReIDModel, out: ModelOutput, labels: torch.Tensor,
                keypoints: Optional[torch.Tensor], image_hw: tuple[int, int], epoch: int
                ) -> tuple[torch.Tensor, dict[str, float]]:
        lc = self.cfg
        parts: dict[str, torch.Tensor] = {}
        branches = out.branches or [(out.feature, out.logits)]  # multi-branch heads: a loss each
        if self.id_loss is not None:
            if lc.id_loss == "normalized_softmax":
                parts["id"] = lc.id_weight * self.id_loss(out.embedding, labels)
            else:
                parts["id"] = lc.id_weight * sum(self.id_loss(logits, labels) for _, logits in branches)
        if self.metric_loss is not None:
            parts["metric"] = lc.metric_weight * sum(self.metric_loss(f, labels) for f, _ in branches)
        if self.center is not None:
            parts["center"] = lc.center_weight * self.center(out.feature, labels)
        if keypoints is not None and lc.heatmap_weight > 0:
            bare = getattr(model, "module", model)
            for name, value in bare.keypoint_losses(out, keypoints, image_hw, lc.heatmap_sigma,
                                                    epoch=epoch).items():
                parts[name] = lc.heatmap_weight * value
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}


@dataclass
class TrainState:
    epoch: int = 0              # epoch in progress (or next to start)
    step_in_epoch: int = 0      # batches of that epoch already taken
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    history: list = field(default_factory=list)


class Trainer:
    def __init__(self, cfg: Config, resume: bool = True, show_progress: bool = True,
                 checkpoint_every_steps: int = 0):
        self.cfg = cfg
        self.show_progress = show_progress
        self.checkpoint_every_steps = checkpoint_every_steps
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(cfg.device)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        seed_everything(cfg.seed)
        self.out_dir = Path(cfg.output_dir)
        self.is_main = self.rank == 0
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "config.yaml")

        need_kp = cfg.model.head in KEYPOINT_HEADS
        # the dataset decides the skeleton; the backbone's weights decide the input normalisation
        self.data: PreparedData = prepare_data(cfg, need_kp)
        num_classes = len(self.data.label_map)
        self.model = build_model(cfg.model, num_classes, self.data.skeleton).to(self.device)
        self.train_transform, self.test_transform = make_transforms(
            cfg, self.data.skeleton, self.model.backbone.input_mean, self.model.backbone.input_std)
        self.criterion = Criterion(cfg, num_classes, self.model.embedding_dim).to(self.device)
        self.regularizer = AdaptiveL2(self.model, A=cfg.regularizer.amplitude, omega=cfg.regularizer.omega) \
            if cfg.regularizer.adaptive_l2 else None
        self.optimizer = self._build_optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.optim.amp and self.device.type == "cuda")
        self.net = self.model
        if self.world_size > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.loss.id_loss != "cross_entropy")
        self.sampler = PKBatchSampler([s.pid for s in self.data.train], cfg.data.p, cfg.data.k,
                                      seed=cfg.seed, num_replicas=self.world_size, rank=self.rank,
                                      item_seeds=True)
        self.train_set = ImageDataset(self.data.train, self.train_transform,
                                      self.data.skeleton.num_keypoints if self.data.skeleton else 0,
                                      self.data.label_map)
        self.state = TrainState()
        self.metrics_log = CSVLog(self.out_dir / "metrics.csv") if self.is_main else None
        self.lambda_log = CSVLog(self.out_dir / "lambdas.csv") if self.is_main and self.regularizer else None
        if resume and (self.out_dir / "last.pt").is_file():
            self.load(self.out_dir / "last.pt")

    # ------------------------------------------------------------------ setup pieces
    def _build_optimizer(self) -> torch.optim.Optimizer:
        oc = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        extra = [p for p in self.criterion.parameters() if p.requires_grad]
        if self.regularizer is not None:
            # the regulariser replaces weight decay: no group decays on its own
            groups = self.regularizer.param_groups(self.model, oc.lr, extra=extra)
            weight_decay = 0.0
        else:
            groups = [{"params": params + extra}]
            weight_decay = oc.weight_decay
        for g in groups:
            g.setdefault("lr", oc.lr)
            g["initial_lr"] = g["lr"]
        if oc.optimizer == "adam":
            return torch.optim.Adam(groups, lr=oc.lr, weight_decay=weight_decay)
        if oc.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=oc.lr, weight_decay=weight_decay)
        if oc.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=oc.lr, momentum=oc.momentum, weight_decay=weight_decay,
                                   nesterov=True)
        raise ValueError(f"unknown optimizer {oc.optimizer!r}; use adam, adamw or sgd")

    def _set_lr(self, epoch_position: float) -> float:
        f = lr_factor(epoch_position, self.cfg.optim)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        return self.cfg.optim.lr * f

    # ------------------------------------------------------------------ checkpoints
    def _state_dict(self) -> dict:
        weights = model_state(self.net)
        return {
            "model": weights,
            "criterion": self.criterion.state_dict(),
            "regularizer": self.regularizer.state_dict() if self.regularizer else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": vars(self.state).copy(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "config": to_dict(self.cfg),
            # what inference needs without the YAML (keyreid.inference.load_model)
            "card": card_for(self.cfg, self.model, self.data.skeleton, len(self.data.label_map), weights),
            "label_map": self.data.label_map,
            "skeleton": self.data.skeleton.name if self.data.skeleton else None,
        }

    def save(self, name: str) -> Path:
        path = self.out_dir / name
        if self.is_main:
            save_checkpoint(path, self._state_dict())
        return path

    def load_weights(self, path: Path) -> None:
        """Only the model's weights (to test a best checkpoint); training state stays as it is."""
        self.model.load_state_dict(load_checkpoint(path, self.device)["model"])

    def load(self, path: Path) -> None:
        """Everything, to resume training exactly where the checkpoint was written."""
        ck = load_checkpoint(path, self.device)
        self.model.load_state_dict(ck["model"])
        self.criterion.load_state_dict(ck["criterion"])
        if self.regularizer is not None and ck.get("regularizer") is not None:
            self.regularizer.load_state_dict(ck["regularizer"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        self.state = TrainState(**ck["state"])
        rng = ck["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        # logs written after the checkpoint belong to the run that died: drop them
        if self.metrics_log is not None:
            self.metrics_log.truncate_after("epoch", self.state.epoch - 1)
        if self.lambda_log is not None:
            self.lambda_log.truncate_after("epoch", self.state.epoch - 1)

    # ------------------------------------------------------------------ loop
    def train_step(self, batch: dict, epoch: int) -> dict[str, float]:
        self.net.train()
        # AdaptiveReID's recipe: the pretrained layers stay fixed for the first epochs while the
        # new ones settle; their BN layers run in inference mode (as a frozen Keras layer does).
        frozen = self.model.pretrained_modules() if epoch < self.cfg.optim.freeze_pretrained_epochs else []
        for module in frozen:
            module.eval()
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device)
        keypoints = batch.get("keypoints")
        keypoints = keypoints.to(self.device) if keypoints is not None else None
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.scaler.is_enabled()):
            out = self.net(images)
            loss, parts = self.criterion(self.net, out, labels, keypoints, tuple(images.shape[-2:]), epoch)
        if self.regularizer is not None:
            reg = self.regularizer.penalty()
            loss = loss + reg
            parts["l2"] = float(reg.detach())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss)} at epoch {epoch}, step "
                                     f"{self.state.step_in_epoch}: lower the learning rate or enable "
                                     "gradient clipping (optim.grad_clip)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for module in frozen:
            for p in module.parameters():
                p.grad = None  # the optimizer skips a parameter without a gradient
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            parts["acc"] = float((out.logits.argmax(1) == labels).float().mean()) \
                if out.logits is not None else float("nan")
        parts["loss"] = float(loss.detach())
        return parts

    def validate(self) -> Optional[dict]:
        if not self.data.val_query:
            return None
        return evaluate_model(self.model, self.data.val_query, self.data.val_gallery,
                              self.test_transform, self.cfg, self.device,
                              protocol=self.data.dataset.protocol)

    def fit(self) -> dict:
        cfg, st = self.cfg, self.state
        tb = TensorBoard(self.out_dir / "tb", enabled=self.is_main)
        loader_kwargs = dict(num_workers=cfg.data.workers, persistent_workers=False,
                             pin_memory=self.device.type == "cuda")
        with progress_bar(self.show_progress and self.is_main) as bar:
            epoch_task = bar.add_task("epochs", total=cfg.optim.epochs, completed=st.epoch)
            while st.epoch < cfg.optim.epochs:
                epoch = st.epoch
                self.sampler.set_epoch(epoch, start_batch=st.step_in_epoch)
                n_batches = len(self.sampler) + st.step_in_epoch
                loader = DataLoader(self.train_set, batch_sampler=self.sampler, **loader_kwargs)
                step_task = bar.add_task(f"epoch {epoch + 1}", total=n_batches, completed=st.step_in_epoch)
                sums: dict[str, float] = {}
                count = 0
                t0 = time.time()
                for batch in loader:
                    lr = self._set_lr(epoch + st.step_in_epoch / max(1, n_batches))
                    parts = self.train_step(batch, epoch)
                    st.step_in_epoch += 1
                    st.global_step += 1
                    count += 1
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + v
                    bar.update(step_task, advance=1, info=f"loss {parts['loss']:.3f} lr {lr:.2e}")
                    if self.checkpoint_every_steps and st.global_step % self.checkpoint_every_steps == 0:
                        self.save("last.pt")
                bar.update(step_task, visible=False)
                row = {"epoch": epoch, "lr": lr if count else float("nan"),
                       "seconds": round(time.time() - t0, 3), "images": count * cfg.data.p * cfg.data.k}
                row.update({k: v / max(1, count) for k, v in sums.items()})
                if self.regularizer is not None:
                    lambdas = self.regularizer.lambdas()
                    values = np.array(list(lambdas.values()))
                    row.update(lambda_mean=float(values.mean()), lambda_min=float(values.min()),
                               lambda_max=float(values.max()))
                    if self.lambda_log is not None:
                        for name, lam in lambdas.items():
                            self.lambda_log.write({"epoch": epoch, "parameter": name, "lambda": lam})
                st.epoch += 1
                st.step_in_epoch = 0
                last_epoch = st.epoch == cfg.optim.epochs
                if cfg.eval.every and (st.epoch % cfg.eval.every == 0 or last_epoch) and self.is_main:
                    metrics = self.validate()
                    if metrics is not None:
                        row.update({f"val_{k}": v for k, v in metrics.items()})
                        if metrics["score"] > st.best_score:
                            st.best_score, st.best_epoch = metrics["score"], epoch
                            self.save("best.pt")
                if self.metrics_log is not None:
                    self.metrics_log.write(row)
                tb.scalars({f"train/{k}": v for k, v in row.items() if isinstance(v, float)}, st.epoch)
                st.history.append(row)
                self.save("last.pt")
                if self.world_size > 1:
                    dist.barrier()
                bar.update(epoch_task, advance=1)
        if self.is_main and st.best_epoch < 0:
            self.save("best.pt")  # no validation split: the last model is the one to use
        tb.close()
        return {"best_epoch": st.best_epoch, "best_val_score": st.best_score, "epochs": st.epoch}
