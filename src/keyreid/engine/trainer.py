"""Re-ID training: the config's losses (Criterion) and the method of the one training loop
(engine/loop.py) that trains a re-ID model with them: warmup + schedule, AMP on GPU, clipping,
validation on held-out training identities, adaptive L2, DDP via torchrun."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from keyreid.config import Config, ConfigError, ConfigValueError, save_config, to_dict
from keyreid.data.loader import ImageDataset
from keyreid.data.samplers import PKBatchSampler
from keyreid.utils.checkpoint import load_checkpoint, model_state
from keyreid.engine.checks import check_names, check_training_data
from keyreid.engine.data import PreparedData, make_transforms, prepare_data
from keyreid.engine.logs import CSVLog
from keyreid.engine.loop import (LoopState, Stage, TrainingDiverged, TrainingLoop, TrainingMethod,  # noqa: F401
                                 distributed_device, seed_everything)
from keyreid.engine.run_folder import check_resume_config, set_aside_previous_run
from keyreid.engine.schedules import lr_factor
from keyreid.errors import KeyreidError
from keyreid.engine.evaluate import evaluate_model
from keyreid.inference import card_for
from keyreid.losses import build_loss
from keyreid.models.build import KEYPOINT_HEADS, ReIDModel, build_model
from keyreid.models.output import ModelOutput
from keyreid.regularizers import AdaptiveL2


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
            raise ConfigValueError(f"loss.id_loss={lc.id_loss!r} is not allowed; use cross_entropy, "
                                   "normalized_softmax or none")
        self.metric_loss = None
        if lc.metric_loss == "triplet":
            self.metric_loss = build_loss("triplet", margin=lc.margin or 0.0, soft_margin=lc.margin is None)
        elif lc.metric_loss in ("ephn_triplet", "ephn"):
            self.metric_loss = build_loss("ephn")
        elif lc.metric_loss == "multi_similarity":
            self.metric_loss = build_loss("multi_similarity")
        elif lc.metric_loss != "none":
            raise ConfigValueError(f"loss.metric_loss={lc.metric_loss!r} is not allowed; use triplet, "
                                   "ephn_triplet, multi_similarity or none")
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


TrainState = LoopState   # the name checkpoints' "state" entries were written under


class Trainer(TrainingMethod):
    """Re-ID training as a method of the one training loop (engine/loop.py): PK batches, the
    config's losses, warmup + schedule per step, AMP on GPU, clipping, the pretrained layers
    frozen for the first epochs, validation on held-out training identities, adaptive L2."""

    unwatched = ("acc",)

    def __init__(self, cfg: Config, resume: bool = True, show_progress: bool = True,
                 checkpoint_every_steps: int = 0, allow_config_change: bool = False):
        """Everything a user can get wrong is checked here, before any file is written: names,
        device, data against the batch and validation settings, and on resume the config against
        the one the run was trained with. config.yaml is written only once that is settled."""
        self.cfg = cfg
        check_names(cfg)
        self.device, self.rank, self.world_size = distributed_device(cfg.device)
        self.is_main = self.rank == 0
        self.divergence_factor = cfg.optim.divergence_factor
        seed_everything(cfg.seed)
        self.out_dir = Path(cfg.output_dir)
        last = self.out_dir / "last.pt"
        checkpoint = load_checkpoint(last, "cpu") if resume and last.is_file() else None
        if checkpoint is not None and checkpoint.get("format") is not None:
            raise ConfigError(f"{last}: not a re-ID training checkpoint (format "
                              f"{checkpoint.get('format')!r}); use another output_dir or --no-resume")
        self.config_changes = check_resume_config(checkpoint.get("config") if checkpoint else None,
                                                  cfg, last, allow_config_change)

        need_kp = cfg.model.head in KEYPOINT_HEADS
        # the dataset decides the skeleton; the backbone's weights decide the input normalisation
        try:
            self.data: PreparedData = prepare_data(cfg, need_kp)
        except ValueError as e:  # the data module's settings checks (keypoints, validation split)
            if isinstance(e, KeyreidError):
                raise
            raise ConfigValueError(str(e)) from None
        check_training_data(cfg, [s.pid for s in self.data.train], self.data.val_query,
                            self.data.val_gallery, self.data.dataset.protocol)
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
        self.loop = TrainingLoop(self, self.out_dir, self.device, self.rank, self.world_size, show_progress,
                                 checkpoint_every_steps)
        self.set_aside: Optional[Path] = None
        if checkpoint is not None:
            self._restore(checkpoint, last)
        elif self.is_main:
            # a fresh start: an earlier run's files (logs, tb, checkpoints) move to previous-N/
            self.set_aside = set_aside_previous_run(self.out_dir) if self.out_dir.is_dir() else None
        self.lambda_log = None
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "config.yaml")
            self.lambda_log = CSVLog(self.out_dir / "lambdas.csv") if self.regularizer else None
            if checkpoint is not None and self.lambda_log is not None:
                self.lambda_log.truncate_after("epoch", self.loop.logged_epochs() - 1)
        self.loop.open_logs(resumed=checkpoint is not None)

    @property
    def state(self) -> LoopState:
        return self.loop.state

    @property
    def metrics_log(self) -> Optional[CSVLog]:
        return self.loop.metrics_log

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
        if oc.head_lr_factor != 1.0:
            groups = split_head_groups(groups, self.model, oc.head_lr_factor)
        for g in groups:
            g["initial_lr"] = g["lr"]
        if oc.optimizer == "adam":
            return torch.optim.Adam(groups, lr=oc.lr, weight_decay=weight_decay)
        if oc.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=oc.lr, weight_decay=weight_decay)
        if oc.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=oc.lr, momentum=oc.momentum, weight_decay=weight_decay,
                                   nesterov=True)
        raise ConfigValueError(f"optim.optimizer={oc.optimizer!r} is not allowed; use adam, adamw or sgd")

    def _set_lr(self, epoch_position: float) -> float:
        f = lr_factor(epoch_position, self.cfg.optim)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        return self.cfg.optim.lr * f

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, loop: TrainingLoop) -> dict:
        weights = model_state(self.net)
        state = vars(loop.state).copy()
        state["epoch"] = loop.epochs_done     # one stage: epochs done, as checkpoints always held
        state.pop("stage_index")
        return {
            "model": weights,
            "criterion": self.criterion.state_dict(),
            "regularizer": self.regularizer.state_dict() if self.regularizer else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": state,
            "config": to_dict(self.cfg),
            # what inference needs without the YAML (keyreid.inference.load_model)
            "card": card_for(self.cfg, self.model, self.data.skeleton, len(self.data.label_map), weights),
            "label_map": self.data.label_map,
            "skeleton": self.data.skeleton.name if self.data.skeleton else None,
        }

    def save(self, name: str) -> Path:
        return self.loop.save(name)

    def load_weights(self, path: Path) -> None:
        """Only the model's weights (to test a best checkpoint); training state stays as it is."""
        self.model.load_state_dict(load_checkpoint(path, self.device)["model"])

    def load(self, path: Path) -> None:
        """Everything, to resume training exactly where the checkpoint was written."""
        self._restore(load_checkpoint(path, "cpu"), path)

    def _restore(self, ck: dict, path: Path) -> None:
        if ck.get("label_map") is not None and \
                {int(k): int(v) for k, v in ck["label_map"].items()} != self.data.label_map:
            raise ConfigError(f"{path}: cannot resume, the training identities differ from the ones "
                              f"this run was trained on ({len(ck['label_map'])} then, "
                              f"{len(self.data.label_map)} now: another data.root, split or seed?); "
                              "use another output_dir or --no-resume")
        # the optimizer's hyper-parameters come from the config (a changed lr is accepted with
        # --allow-config-change), its moments from the checkpoint
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.model.load_state_dict(ck["model"])
            self.criterion.load_state_dict(ck["criterion"])
            if self.regularizer is not None and ck.get("regularizer") is not None:
                self.regularizer.load_state_dict(ck["regularizer"])
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{path}: cannot resume, its weights do not fit the model this config "
                              f"builds ({first}); use another output_dir or --no-resume") from None
        for group, settings in zip(self.optimizer.param_groups, fresh):
            group.update(settings)
        self.scaler.load_state_dict(ck["scaler"])
        self.loop.resumed_from(LoopState.from_dict(ck["state"]), ck["rng"])

    # ------------------------------------------------------------------ the method's steps
    def training_stages(self) -> list[Stage]:
        return [Stage("main", self.cfg.optim.epochs)]

    def epoch_batches(self, stage: Stage, epoch: int, epochs_done: int, start_step: int):
        self.sampler.set_epoch(epoch, start_batch=start_step)
        loader = DataLoader(self.train_set, batch_sampler=self.sampler, num_workers=self.cfg.data.workers,
                            persistent_workers=False, pin_memory=self.device.type == "cuda")
        return loader, len(self.sampler) + start_step

    def step(self, batch: dict, stage: Stage, epoch: int, step: int, n_steps: int) -> dict[str, float]:
        self.state.epoch_lr = self._set_lr(epoch + step / max(1, n_steps))
        return self.train_step(batch, epoch)

    def step_info(self, parts: dict[str, float]) -> str:
        return f"loss {parts['loss']:.3f} lr {self.state.epoch_lr:.2e}"

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
        if not torch.isfinite(loss):  # before the optimizer step: the weights stay good
            self.loop.diverged(f"the loss is {float(loss)}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for module in frozen:
            for p in module.parameters():
                p.grad = None  # the optimizer skips a parameter without a gradient
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        if not self.scaler.is_enabled():  # with AMP an overflow is normal: the scaler skips the step
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            if not torch.isfinite(norm):
                self.loop.diverged(f"the gradient norm is {float(norm)}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            parts["acc"] = float((out.logits.argmax(1) == labels).float().mean()) \
                if out.logits is not None else float("nan")
        parts["loss"] = float(loss.detach())
        return parts

    def epoch_row(self, means: dict, steps: int, seconds: float, stage: Stage, epoch: int,
                  epochs_done: int) -> dict:
        cfg = self.cfg
        row = {"epoch": epochs_done, "lr": self.state.epoch_lr, "seconds": round(seconds, 3),
               "images": steps * cfg.data.p * cfg.data.k}
        row.update(means)
        if self.regularizer is not None:
            lambdas = self.regularizer.lambdas()
            values = np.array(list(lambdas.values()))
            row.update(lambda_mean=float(values.mean()), lambda_min=float(values.min()),
                       lambda_max=float(values.max()))
        return row

    def validate(self) -> Optional[dict]:
        if not self.data.val_query:
            return None
        return evaluate_model(self.model, self.data.val_query, self.data.val_gallery,
                              self.test_transform, self.cfg, self.device,
                              protocol=self.data.dataset.protocol)

    def finish_is_costly(self, epochs_done: int) -> bool:
        """After the epoch just trained: validation every eval.every epochs and after the last."""
        every = self.cfg.eval.every
        return bool(every and self.data.val_query and (epochs_done % every == 0 or epochs_done == self.cfg.optim.epochs))

    def finish_epoch(self, row: dict, epochs_done: int) -> Optional[float]:
        score = None
        if self.finish_is_costly(epochs_done):
            metrics = self.validate()
            if metrics is not None:
                row.update({f"val_{k}": v for k, v in metrics.items()})
                score = metrics["score"]
        if self.lambda_log is not None and self.regularizer is not None:
            # the row's lambdas are those at the epoch's end (a resume recomputes the same values)
            for name, lam in self.regularizer.lambdas().items():
                self.lambda_log.write({"epoch": row["epoch"], "parameter": name, "lambda": lam})
        return score

    def tb_scalars(self, row: dict) -> tuple[dict, int]:
        return {f"train/{k}": v for k, v in row.items() if isinstance(v, float)}, int(row["epoch"]) + 1

    def plain_line(self, row: dict, total_epochs: int) -> str:
        return epoch_line(row, total_epochs)

    def bad_weights(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]

    def divergence_message(self, what: str, loop: TrainingLoop) -> str:
        """What happened, where, what last.pt still holds and what to change."""
        path = self.out_dir / "last.pt"
        if loop.last_saved is not None:
            e, step = loop.last_saved
            kept = (f"{path} holds the last good state (end of epoch {e})" if step == 0 else
                    f"{path} holds the last good state (epoch {e + 1}, step {step})")
            then = "run again with --allow-config-change to resume from it, or --no-resume to start over"
        else:
            kept, then = "no checkpoint was written by this run", "run again"
        return (f"training diverged at epoch {loop.epochs_done + 1}, step {loop.state.step_in_epoch + 1}: "
                f"{what}; {kept}. Lower optim.lr (now {self.cfg.optim.lr:g}) or set optim.grad_clip "
                f"(e.g. 5.0), then {then}")

    def fit(self) -> dict:
        self.loop.fit()
        st = self.state
        if self.is_main and st.best_epoch < 0:
            self.save("best.pt")  # no validation split: the last model is the one to use
        return {"best_epoch": st.best_epoch, "best_val_score": st.best_score, "epochs": self.loop.epochs_done}


def epoch_line(row: dict, epochs: int) -> str:
    """`epoch 3/10  loss 2.3456  lr 3.50e-04  412.3 img/s  val mAP 51.20 R1 70.10` for logs."""
    seconds = row.get("seconds") or 0.0
    parts = [f"epoch {row['epoch'] + 1}/{epochs}", f"loss {row.get('loss', float('nan')):.4f}",
             f"lr {row['lr']:.2e}", f"{row['images'] / seconds:.1f} img/s" if seconds else "- img/s"]
    val = [f"{k[4:]} {100 * v:.2f}" for k, v in row.items()
           if k.startswith("val_") and k not in ("val_score", "val_valid_queries")]
    if val:
        parts.append("val " + " ".join(val))
    return "  ".join(parts)


def split_head_groups(groups: list[dict], model: torch.nn.Module, factor: float) -> list[dict]:
    """Each parameter group split in two: the head's parameters at factor x the group's lr (new
    layers trained faster than the pretrained backbone, as papers on ImageNet backbones often do)."""
    if factor <= 0:
        raise ConfigValueError(f"optim.head_lr_factor must be positive, got {factor}")
    head = getattr(model, "head", None)
    if head is None:
        raise ConfigValueError("optim.head_lr_factor needs a model with a head")
    head_ids = {id(p) for p in head.parameters()}
    out = []
    for g in groups:
        inside = [p for p in g["params"] if id(p) in head_ids]
        outside = [p for p in g["params"] if id(p) not in head_ids]
        if outside:
            out.append({**g, "params": outside})
        if inside:
            out.append({**g, "params": inside, "lr": g["lr"] * factor})
    return out
