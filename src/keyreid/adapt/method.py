"""Unsupervised adaptation as a method of the one training loop (engine/loop.py): cluster-contrast
(Dai et al. 2021) on keyreid models.

Each epoch (every `cluster.every` epochs) the target images are embedded by the model as it is
(eval mode, test transform, the retrieval embedding), clustered (adapt/cluster.py: sparse
k-reciprocal Jaccard + DBSCAN; outliers dropped), a cluster memory is initialised from the
clusters' mean features, and the epoch trains on P x K batches of pseudo-identities with the
memory's InfoNCE loss on the training-mode embedding (the memory is momentum-updated by each
batch). Where the target's cameras are known, memory.kind auto (the default) or camera keeps one
proxy per cluster and camera instead (CAP, adapt/camera_memory.py). Keypoint heads keep their heatmap loss on target images that have keypoints. The source
model's identity classifier is kept in the weights but gets no gradient.

Everything around the steps is the loop's, as for `keyreid train`: resume bit-identical from any
step (the epoch's pseudo-labels and the memory travel in last.pt), config diff on resume,
--no-resume set-aside, metrics.csv, progress, divergence stop. The first clustering happens
before any file is written, so a target that cannot be clustered (too few images, DBSCAN
settings that make one cluster or only outliers) is one line and nothing of the user's changes.

The target's true labels, where it has any, are sealed in adapt/target.py: metrics.csv gets
pseudo-label quality (truth_*) and target test metrics (test_*), never training or best.pt.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from keyreid.adapt.cluster import cluster
from keyreid.adapt.config import ARCHITECTURE, IGNORED, AdaptConfig, save_adapt_config
from keyreid.adapt.jaccard import ClusteringError
from keyreid.adapt.camera_memory import CameraProxyMemory
from keyreid.adapt.memory import ClusterMemory
from keyreid.adapt.target import TargetSet, load_target
from keyreid.config import Config, ConfigError, _build, to_dict
from keyreid.data.loader import ImageDataset
from keyreid.data.samplers import PKBatchSampler
from keyreid.engine.data import make_transforms
from keyreid.engine.evaluate import evaluate_model
from keyreid.engine.loop import LoopState, Stage, TrainingLoop, TrainingMethod, distributed_device, seed_everything
from keyreid.engine.run_folder import config_diff, flat_values, refuse_changes, set_aside_previous_run
from keyreid.inference import card_for, extract_features, load_model
from keyreid.models.build import KEYPOINT_HEADS
from keyreid.utils.checkpoint import load_checkpoint, model_state

__all__ = ["ADAPT_FORMAT", "Adaptation", "adapt"]

ADAPT_FORMAT = "keyreid-adapt"
ADAPT_VERSION = 1


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


class Adaptation(TrainingMethod):
    """`keyreid adapt` as a method of the training loop (see the module docstring)."""

    def __init__(self, cfg: AdaptConfig, resume: bool = True, show_progress: bool = True,
                 checkpoint_every_steps: int = 0, allow_config_change: bool = False,
                 notify: Callable[[str], None] = _stderr):
        self.cfg, self.notify = cfg, notify
        self.device, self.rank, self.world_size = distributed_device(cfg.device)
        if self.world_size > 1:
            raise ConfigError("keyreid adapt runs in one process (every batch updates the cluster memory, "
                              "which DDP ranks would update apart); run it without torchrun")
        seed_everything(cfg.seed)
        self.out_dir = Path(cfg.output_dir)
        if not cfg.checkpoint:
            raise ConfigError("adapt: no source checkpoint given (CHECKPOINT or checkpoint: in the config)")
        if not cfg.target.root:
            raise ConfigError("adapt: no target given (--target ROOT or target.root: in the config)")
        last = self.out_dir / "last.pt"
        saved = load_checkpoint(last, "cpu") if resume and last.is_file() else None
        if saved is not None and saved.get("format") != ADAPT_FORMAT:
            raise ConfigError(f"{last}: not an adaptation checkpoint (a training run's?); use another "
                              "output folder or --no-resume")
        self.config_changes: list[str] = []
        if saved is not None:
            # settings added to keyreid since the run was written compare at their defaults
            stored = _build(AdaptConfig, saved["adapt_config"], f"{last}: adapt_config")
            if "kind" not in saved["adapt_config"].get("memory", {}):
                stored.memory.kind = "cluster"   # what runs did before memory.kind existed
            arch, other = config_diff(flat_values(stored), flat_values(cfg), IGNORED, ARCHITECTURE)
            self.config_changes = refuse_changes(last, cfg.output_dir, arch, other, allow_config_change,
                                                 what="the source model or target differs from this run's")

        # the source model through the one loading path; its training config gives the transforms
        loaded = load_model(cfg.checkpoint, cfg.device)
        self.source_card = loaded.card
        self.model = loaded.model.to(self.device)
        self.src_cfg: Config = loaded.config if loaded.config is not None else Config()
        self.src_cfg = dataclasses.replace(self.src_cfg, data=dataclasses.replace(
            self.src_cfg.data, test_batch_size=cfg.test_batch_size))
        self.skeleton = loaded.skeleton
        self.target: TargetSet = load_target(cfg.target, cfg.seed, notify)
        self.use_keypoints = self._check_skeleton()
        if cfg.memory.kind == "camera" and self.target.cameras is None:
            raise ConfigError(f"memory.kind=camera needs the camera of every target image and {self.target.root} "
                              "has none: give --cam-pattern (a regex with a group 'cam' read from file names) "
                              "or use memory.kind=cluster")
        # auto: camera proxies where the cameras are known (the same target resolves the same on resume)
        self.memory_kind = "camera" if cfg.memory.kind == "camera" or (
            cfg.memory.kind == "auto" and self.target.cameras is not None) else "cluster"
        if cfg.memory.kind == "auto" and self.memory_kind == "cluster":
            notify(f"note: the cameras of {self.target.root} are unknown: one memory centroid per cluster "
                   "(--cam-pattern gives camera-aware proxies, which adapt far better where cameras differ)")
        self.train_transform, self.test_transform = make_transforms(
            self.src_cfg, self.skeleton, self.model.backbone.input_mean, self.model.backbone.input_std)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        for g in self.optimizer.param_groups:
            g["initial_lr"] = g["lr"]
        self.loop = TrainingLoop(self, self.out_dir, self.device, self.rank, self.world_size, show_progress,
                                 checkpoint_every_steps)
        # the epoch's pseudo-labels [N] (-1 outliers), the epochs-done count they were made at, and
        # their cluster statistics; the memory holds the momentum-updated centroids
        self.labels: Optional[np.ndarray] = None
        self.labels_at = -1
        self.cluster_stats: dict = {}
        self.memory = None   # ClusterMemory or CameraProxyMemory
        self.set_aside: Optional[Path] = None
        if saved is not None:
            self._restore(saved, last)
        else:
            self._recluster(0)   # before any file is written: a hopeless target stops here
            self.set_aside = set_aside_previous_run(self.out_dir) if self.out_dir.is_dir() else None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_adapt_config(cfg, self.out_dir / "config.yaml")
        self.loop.open_logs(resumed=saved is not None)

    @property
    def state(self) -> LoopState:
        return self.loop.state

    # ------------------------------------------------------------------ set-up checks
    def _check_skeleton(self) -> bool:
        """True when the heatmap loss trains on the target's keypoints."""
        head = self.source_card["model"]["head"]
        if head not in KEYPOINT_HEADS or self.cfg.heatmap_weight == 0:
            return False
        if not self.target.has_keypoints:
            self.notify(f"note: the target {self.target.root} has no keypoints (no sidecar): the {head} "
                        "head adapts without its heatmap loss; `keyreid keypoints estimate` makes a sidecar")
            return False
        mine = self.skeleton.name if self.skeleton else None
        theirs = self.target.skeleton.name if self.target.skeleton else None
        if mine != theirs:
            raise ConfigError(f"{self.cfg.checkpoint}: its {head} head was trained on {mine!r} keypoints, the "
                              f"target's sidecar has {theirs!r} keypoints; estimate the target's keypoints "
                              f"with the {mine!r} skeleton or set heatmap_weight: 0")
        return True

    # ------------------------------------------------------------------ clustering
    def _recluster(self, epochs_done: int) -> None:
        c = self.cfg.cluster
        start = time.perf_counter()
        feats = extract_features(self.model, self.target.images, self.test_transform, self.cfg.test_batch_size,
                                 0, self.device, flip=False)
        embed_s = time.perf_counter() - start
        where = "the source model's features" if epochs_done == 0 else f"the features after epoch {epochs_done}"
        # a later epoch's failure keeps last.pt: the user changes the setting and resumes
        later = "" if epochs_done == 0 else (f"; {self.out_dir / 'last.pt'} keeps epoch {epochs_done}: "
                                             "resume with the new setting and --allow-config-change")
        try:
            found = cluster(feats, eps=c.eps, min_samples=c.min_samples, k1=c.k1, k2=c.k2,
                            search=c.search, cameras=self.target.cameras, seed=self.cfg.seed)
        except ClusteringError as e:
            raise ClusteringError(f"{self.target.root}: clustering {len(feats)} target images ({where}): {e}{later}") \
                from None
        clustered = found.labels >= 0
        if found.num_clusters < self.cfg.p:
            raise ClusteringError(f"{self.target.root}: clustering {len(feats)} target images ({where}) made "
                                  f"{found.num_clusters} clusters ({found.num_outliers} outliers), fewer than the "
                                  f"p={self.cfg.p} pseudo-identities a batch needs: lower p, change --eps, or add "
                                  f"target images{later}")
        self.labels, self.labels_at = found.labels, epochs_done
        self.memory = self._new_memory(torch.from_numpy(feats), found.labels)
        self.cluster_stats = {"clusters": found.num_clusters, "outliers": found.num_outliers,
                              "clustered": float(clustered.mean()),
                              "cluster_seconds": round(embed_s + sum(found.seconds.values()), 3),
                              "embed_seconds": round(embed_s, 3)}
        if found.cross_camera is not None:
            self.cluster_stats["cross_camera_clusters"] = found.cross_camera
        self.cluster_stats.update({f"truth_{k}": v for k, v in self.target.audit(found.labels).items()})
        self.notify(f"epoch {epochs_done + 1}: {found.num_clusters} clusters of {len(feats)} target images, "
                    f"{found.num_outliers} outliers ({100 * (1 - clustered.mean()):.1f}%), "
                    f"{self.cluster_stats['cluster_seconds']:.1f} s")

    # ------------------------------------------------------------------ memories
    def _memory_options(self) -> dict:
        m = self.cfg.memory
        if self.memory_kind == "camera":
            return {"temperature": m.temperature, "momentum": m.momentum, "inter_weight": m.inter_weight,
                    "hard_negatives": m.hard_negatives}
        return {"temperature": m.temperature, "momentum": m.momentum, "update": m.update}

    def _new_memory(self, feats: torch.Tensor, labels: np.ndarray):
        if self.memory_kind == "camera":
            return CameraProxyMemory.from_clusters(feats, labels, self.target.cameras,
                                                   **self._memory_options()).to(self.device)
        return ClusterMemory.from_clusters(feats, torch.from_numpy(labels), **self._memory_options()).to(self.device)

    def _memory_shaped_like(self, state: dict):
        if self.memory_kind == "camera":
            return CameraProxyMemory(state["proxies"].shape[1], state["proxy_cluster"], state["proxy_camera"],
                                     state["cameras"], **self._memory_options()).to(self.device)
        centroids = state["centroids"]
        return ClusterMemory(centroids.shape[1], centroids.shape[0], **self._memory_options()).to(self.device)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, loop: TrainingLoop) -> dict:
        weights = model_state(self.model)
        return {
            "format": ADAPT_FORMAT, "version": ADAPT_VERSION,
            "model": weights,
            "optimizer": self.optimizer.state_dict(),
            "memory": self.memory.state_dict(),
            "labels": torch.from_numpy(self.labels),
            "labels_at": self.labels_at,
            "cluster_stats": self.cluster_stats,
            "state": vars(loop.state).copy(),
            "adapt_config": dataclasses.asdict(self.cfg),
            # what load_model needs: the source's training config and a card for these weights
            "config": to_dict(self.src_cfg),
            "card": card_for(self.src_cfg, self.model, self.skeleton, int(self.source_card["num_classes"]), weights),
            "source": {"checkpoint": str(self.cfg.checkpoint), "fingerprint": self.source_card["fingerprint"]},
        }

    def _restore(self, ck: dict, path: Path) -> None:
        try:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{path}: cannot resume, its weights do not fit the source model ({first}); "
                              "use another output folder or --no-resume") from None
        for g in self.optimizer.param_groups:   # hyper-parameters from the config, moments from the file
            g["lr"] = g["initial_lr"] = self.cfg.lr
            g["weight_decay"] = self.cfg.weight_decay
        self.labels, self.labels_at = ck["labels"].numpy().copy(), int(ck["labels_at"])
        if len(self.labels) != len(self.target.images):
            raise ConfigError(f"{path}: cannot resume, the run clustered {len(self.labels)} target images and "
                              f"{self.target.root} has {len(self.target.images)} now; use another output "
                              "folder or --no-resume")
        self.memory = self._memory_shaped_like(ck["memory"])
        self.memory.load_state_dict(ck["memory"])
        self.cluster_stats = dict(ck["cluster_stats"])
        self.loop.resumed_from(LoopState.from_dict(ck["state"]), ck["rng"])

    # ------------------------------------------------------------------ the method's steps
    def training_stages(self) -> list[Stage]:
        return [Stage("adapt", self.cfg.epochs)]

    def _lr(self, epochs_done: int) -> float:
        return self.cfg.lr * 0.1 ** sum(1 for m in self.cfg.milestones if epochs_done >= m)

    def epoch_batches(self, stage: Stage, epoch: int, epochs_done: int, start_step: int):
        if self.labels_at != epochs_done and epochs_done % self.cfg.cluster.every == 0:
            self._recluster(epochs_done)
        elif self.labels_at != epochs_done:   # between re-clusterings: the labels stay, the memory goes on
            self.labels_at = epochs_done
        samples = self.target.labelled_by(self.labels)
        n_steps = self.cfg.iters or max(1, math.ceil(len(samples) / (self.cfg.p * self.cfg.k)))
        plan = epoch_plan([s.pid for s in samples], self.cfg.p, self.cfg.k, self.cfg.seed, epoch, n_steps)
        dataset = ImageDataset(samples, self.train_transform,
                               self.skeleton.num_keypoints if self.use_keypoints else 0)
        loader = DataLoader(dataset, batch_sampler=plan[start_step:], num_workers=self.cfg.workers,
                            persistent_workers=False, pin_memory=self.device.type == "cuda")
        lr = self._lr(epochs_done)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.state.epoch_lr = lr
        return loader, n_steps

    def step(self, batch: dict, stage: Stage, epoch: int, step: int, n_steps: int) -> dict[str, float]:
        self.model.train()
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device)
        out = self.model(images)
        if self.memory_kind == "camera":
            parts = {"memory": self.memory(out.embedding, labels, batch["camid"].to(self.device))}
        else:
            parts = {"memory": self.memory(out.embedding, labels)}
        keypoints = batch.get("keypoints")
        if self.use_keypoints and keypoints is not None and bool((keypoints[..., 2] > 0).any()):
            for name, value in self.model.keypoint_losses(out, keypoints.to(self.device), tuple(images.shape[-2:]),
                                                          self.src_cfg.loss.heatmap_sigma,
                                                          epoch=epoch).items():
                parts[name] = self.cfg.heatmap_weight * value
        loss = sum(parts.values())
        if not torch.isfinite(loss):   # before the optimizer step: the weights stay good
            self.loop.diverged(f"the loss is {float(loss)}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        values = {k: float(v.detach()) for k, v in parts.items()}
        values["loss"] = float(loss.detach())
        return values

    def step_info(self, parts: dict[str, float]) -> str:
        return f"loss {parts['loss']:.3f} lr {self.state.epoch_lr:.2e}"

    def epoch_row(self, means: dict, steps: int, seconds: float, stage: Stage, epoch: int,
                  epochs_done: int) -> dict:
        row = {"epoch": epochs_done, "lr": self.state.epoch_lr, "seconds": round(seconds, 3),
               "images": steps * self.cfg.p * self.cfg.k}
        row.update(means)
        row.update(self.cluster_stats)
        return row

    def _evaluates(self, epochs_done: int) -> bool:
        every = self.cfg.eval_every
        return bool(self.target.query) and (epochs_done == self.cfg.epochs or bool(every and epochs_done % every == 0))

    def finish_is_costly(self, epochs_done: int) -> bool:
        return self._evaluates(epochs_done)

    def finish_epoch(self, row: dict, epochs_done: int) -> Optional[float]:
        """Target test metrics for the log; no score: labels never choose a checkpoint."""
        if self._evaluates(epochs_done):
            metrics = evaluate_target(self.model, self.target, self.test_transform, self.src_cfg, self.device)
            row.update({f"test_{k}": v for k, v in metrics.items() if k != "score"})
        return None

    def plain_line(self, row: dict, total_epochs: int) -> str:
        parts = [f"epoch {row['epoch'] + 1}/{total_epochs}", f"loss {row.get('loss', float('nan')):.4f}",
                 f"clusters {row.get('clusters')}", f"outliers {row.get('outliers')}"]
        if "truth_ari" in row:
            parts.append(f"pseudo-label ARI {row['truth_ari']:.3f}")
        if "test_mAP" in row:
            parts.append(f"target mAP {100 * row['test_mAP']:.2f} R1 {100 * row['test_R1']:.2f}")
        return "  ".join(parts)

    def bad_weights(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]

    def divergence_message(self, what: str, loop: TrainingLoop) -> str:
        path = self.out_dir / "last.pt"
        kept = f"{path} holds the last good state" if loop.last_saved is not None else \
            "no checkpoint was written by this run"
        return (f"adaptation diverged at epoch {loop.epochs_done + 1}, step {loop.state.step_in_epoch + 1}: "
                f"{what}; {kept}. Lower lr (now {self.cfg.lr:g}) and run again with --allow-config-change, "
                "or --no-resume to start over")

    def fit(self) -> dict:
        self.loop.fit()
        self.loop.save("best.pt")   # the last model: no labels choose among epochs
        last = self.state.history[-1] if self.state.history else {}
        return {"epochs": self.loop.epochs_done, "final": last}


def epoch_plan(pids: list[int], p: int, k: int, seed: int, epoch: int, n_steps: int) -> list[list]:
    """The epoch's n_steps P x K batches (with per-item augmentation seeds), a pure function of
    its arguments (a resumed epoch rebuilds it and skips the steps done). One PK pass ends when
    fewer than P pseudo-identities have images left, which DBSCAN's uneven cluster sizes make
    short: passes are chained (each its own draw) until the epoch has n_steps."""
    sampler = PKBatchSampler(pids, p, k, seed=seed, item_seeds=True)
    plan: list[list] = []
    rounds = 0
    while len(plan) < n_steps:
        sampler.set_epoch(epoch * 1000 + rounds)
        plan.extend(sampler)
        rounds += 1
    return plan[:n_steps]


def evaluate_target(model: torch.nn.Module, target: TargetSet, transform, cfg: Config,
                    device: torch.device) -> dict:
    """mAP / CMC of a model on the target's labelled test split (reporting only)."""
    return evaluate_model(model, target.query, target.gallery, transform, cfg, device, protocol=target.protocol)


def adapt(cfg: AdaptConfig, resume: bool = True, show_progress: bool = True,
          allow_config_change: bool = False, checkpoint_every_steps: int = 0) -> dict:
    """Adapt cfg.checkpoint to cfg.target (Python entry; `keyreid adapt` is the CLI's)."""
    return Adaptation(cfg, resume=resume, show_progress=show_progress, allow_config_change=allow_config_change,
                      checkpoint_every_steps=checkpoint_every_steps).fit()
