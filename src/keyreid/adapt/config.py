"""The typed config of `keyreid adapt` (defaults here, in code; a YAML file and `--set` override
them through keyreid.config's one typed-config loader).

Defaults follow cluster-contrast (Dai et al. 2021) where it states them: DBSCAN eps 0.6 and
min_samples 4 on k-reciprocal Jaccard distances (k1 30, k2 6), memory temperature 0.05 and
momentum 0.2 with the hard-instance update, Adam at 3.5e-4 with weight decay 5e-4, the lr divided
by 10 at the milestones, P x K batches of pseudo-identities. Epochs and steps are the demo budget
of this CPU project, not the paper's 50 x 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from keyreid.config import ConfigValueError, read_typed_config, save_typed_config

__all__ = ["AdaptConfig", "ClusterSettings", "MemorySettings", "TargetSettings", "load_adapt_config",
           "save_adapt_config"]


@dataclass
class TargetSettings:
    root: str = ""
    dataset: str = "unlabelled"          # any dataset adapter: its training split is used, unlabelled
    options: dict = field(default_factory=dict)   # passed to the adapter (cam_pattern, on_error, ...)
    sidecar: Optional[str] = None        # keypoints; default ROOT/keypoints.jsonl when present


@dataclass
class ClusterSettings:
    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    search: str = "auto"                 # keyreid.adapt.jaccard.SEARCHES
    every: int = 1                       # re-cluster every N epochs


@dataclass
class MemorySettings:
    temperature: float = 0.05
    momentum: float = 0.2
    update: str = "hard"                 # hard | mean (cluster memory)
    kind: str = "auto"                   # cluster: one centroid per cluster (cluster-contrast);
    #                                      camera: one proxy per cluster and camera (CAP), needs cameras;
    #                                      auto: camera where every target image's camera is known
    #                                      (bench/RESULTS.md "Adapting to a new site": far better there)
    inter_weight: float = 0.5            # camera proxies: weight of the cross-camera term (CAP's)
    hard_negatives: int = 50             # camera proxies: other clusters' proxies in that term (CAP's)


@dataclass
class AdaptConfig:
    checkpoint: str = ""                 # the source model (a keyreid torch checkpoint)
    output_dir: str = "runs/adapt"
    seed: int = 0
    device: str = "auto"
    target: TargetSettings = field(default_factory=TargetSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    epochs: int = 10                     # the demo budget (configs/demo.yaml trains 10)
    iters: int = 0                       # steps per epoch; 0: one pass over the clustered images
    p: int = 16                          # pseudo-identities per batch
    k: int = 4                           # images per pseudo-identity
    lr: float = 3.5e-4
    weight_decay: float = 5.0e-4
    milestones: list = field(default_factory=list)   # epochs after which the lr is divided by 10
    heatmap_weight: float = 1.0          # keypoint heads, on target images with keypoints
    workers: int = 2
    test_batch_size: int = 256
    eval_every: int = 0                  # target test split (labels only for reporting); 0: at the end


# settings that do not change what is computed: free to differ on resume
IGNORED = {"output_dir", "device", "workers", "test_batch_size", "eval_every"}
# settings that decide which run this is: never resumed across
ARCHITECTURE = {"checkpoint", "target.root", "target.dataset", "target.options", "memory.kind"}


def check_adapt(cfg: AdaptConfig) -> None:
    def bad(key: str, value, want: str) -> None:
        raise ConfigValueError(f"{key}={value!r}: {want}")

    if cfg.epochs < 1:
        bad("epochs", cfg.epochs, "must be >= 1")
    if cfg.iters < 0:
        bad("iters", cfg.iters, "must be >= 0 (0: one pass over the clustered images)")
    if cfg.p < 2 or cfg.k < 1:
        bad("p, k", (cfg.p, cfg.k), "need p >= 2 pseudo-identities and k >= 1 images per batch")
    if not cfg.lr > 0:
        bad("lr", cfg.lr, "must be > 0")
    if cfg.weight_decay < 0 or cfg.heatmap_weight < 0:
        bad("weight_decay / heatmap_weight", (cfg.weight_decay, cfg.heatmap_weight), "must be >= 0")
    if cfg.cluster.every < 1:
        bad("cluster.every", cfg.cluster.every, "must be >= 1")
    if cfg.memory.update not in ("hard", "mean"):
        bad("memory.update", cfg.memory.update, "use hard or mean")
    if cfg.memory.kind not in ("auto", "cluster", "camera"):
        bad("memory.kind", cfg.memory.kind, "use auto, cluster or camera")
    if cfg.memory.inter_weight < 0 or cfg.memory.hard_negatives < 1:
        bad("memory.inter_weight / hard_negatives", (cfg.memory.inter_weight, cfg.memory.hard_negatives),
            "need a weight >= 0 and >= 1 negative")
    if not all(isinstance(m, int) and m > 0 for m in cfg.milestones):
        bad("milestones", cfg.milestones, "must be positive whole epochs")


def load_adapt_config(path: Optional[str | Path] = None, overrides: tuple[str, ...] | list[str] = ()
                      ) -> AdaptConfig:
    return read_typed_config(AdaptConfig, path, overrides, check_adapt)


def save_adapt_config(cfg: AdaptConfig, path: str | Path) -> None:
    save_typed_config(cfg, path)

