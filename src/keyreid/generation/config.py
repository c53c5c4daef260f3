"""The typed config of a generation run: dataclasses with defaults in code, a YAML file and
`--set key=value` overrides at the edge, read and checked by the same machinery as keyreid.config
(unknown keys, wrong types and out-of-range values are one-line ConfigErrors naming the file and key)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


from keyreid.config import ConfigError, _build, _merge, read_typed_config, save_typed_config, typed_config_from_dict  # noqa: F401  (_build: used by the trainer)


@dataclass
class GenDataConfig:
    dataset: str = "market1501"
    root: str = "data/synth"
    sidecar: Optional[str] = None                     # keypoint sidecar; default ROOT/keypoints.jsonl
    options: dict = field(default_factory=dict)       # passed to the dataset adapter
    min_keypoint_confidence: float = 0.0              # below this a keypoint counts as invisible
    allow_missing_keypoints: bool = False             # train images without a sidecar entry (no pose)
    height: int = 128
    width: int = 64
    sigma: Optional[float] = None                     # pose-map sigma in px; None: 5 * height / 256
    flip_prob: float = 0.5
    batch_size: int = 16
    workers: int = 2
    max_pairs_per_epoch: Optional[int] = None         # a seeded subsample of the method's pairs
    val_identities: float = 0.0                       # fraction of training ids held out (sample grids)


@dataclass
class GenOptimConfig:
    epochs: int = 10                                  # at constant LR (methods with one stage)
    decay_epochs: int = 10                            # then linear decay to 0
    amp: bool = True                                  # only takes effect on a GPU
    amp_dtype: str = "bfloat16"                       # bfloat16 (no loss scaling) | float16 (GradScaler)
    grad_clip: Optional[float] = None                 # max gradient norm per optimizer step


@dataclass
class GenLogConfig:
    sample_every: int = 1                             # epochs between sample grids (0: none)
    sample_count: int = 8                             # rows (pairs) in a grid
    tensorboard: bool = True


@dataclass
class GenConfig:
    name: str = "generation"
    seed: int = 0
    output_dir: str = "runs/generation"
    device: str = "auto"
    method: str = "pngan"
    method_options: dict = field(default_factory=dict)   # checked by the method (its Options dataclass)
    reid_checkpoint: Optional[str] = None              # a keyreid re-ID checkpoint some methods use
    data: GenDataConfig = field(default_factory=GenDataConfig)
    optim: GenOptimConfig = field(default_factory=GenOptimConfig)
    log: GenLogConfig = field(default_factory=GenLogConfig)


def load_gen_config(path: Optional[str | Path] = None, overrides: tuple[str, ...] | list[str] = ()) -> GenConfig:
    """Defaults, then the YAML file (which may name a `base:` file relative to itself), then
    `key=value` overrides; each checked on its own so an error names the one that holds it
    (keyreid.config's one loader of typed configs)."""
    return read_typed_config(GenConfig, path, overrides, check_gen_ranges, merge=_merge_gen)


def gen_config_from_dict(values: dict, where: str, overrides: tuple[str, ...] | list[str] = ()) -> GenConfig:
    """A config from a resolved mapping (a file's, or the one a checkpoint stores) plus overrides.
    method_options is replaced as a whole by a file but merged key by key by `--set`."""
    return typed_config_from_dict(GenConfig, values, where, overrides, check_gen_ranges, merge=_merge_gen)


def _merge_gen(base: dict, update: dict) -> dict:
    out = _merge(base, {k: v for k, v in update.items() if k != "method_options"})
    if "method_options" in update:
        old = out.get("method_options")
        new = update["method_options"]
        out["method_options"] = {**old, **new} if isinstance(old, dict) and isinstance(new, dict) else new
    return out


def check_gen_ranges(cfg: GenConfig) -> None:
    """Numeric ranges and names, checked when the config is loaded so a typo never costs a run."""
    d, o, lg = cfg.data, cfg.optim, cfg.log
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"device={cfg.device!r} is not a device name; use auto, cpu, cuda, cuda:N or mps")
    if o.amp_dtype not in ("bfloat16", "float16"):
        raise ConfigError(f"optim.amp_dtype={o.amp_dtype!r} is not allowed; use one of: bfloat16, float16")
    checks = [
        ("seed", cfg.seed, cfg.seed >= 0, ">= 0"),
        ("name", cfg.name, bool(cfg.name.strip()), "a non-empty name"),
        ("output_dir", cfg.output_dir, bool(cfg.output_dir.strip()), "a non-empty path"),
        ("method", cfg.method, bool(cfg.method.strip()), "a method name"),
        ("data.root", d.root, bool(d.root.strip()), "a non-empty path"),
        ("data.min_keypoint_confidence", d.min_keypoint_confidence, 0 <= d.min_keypoint_confidence <= 1,
         "in [0, 1]"),
        ("data.height", d.height, d.height >= 16 and d.height % 4 == 0, ">= 16 and divisible by 4"),
        ("data.width", d.width, d.width >= 16 and d.width % 4 == 0, ">= 16 and divisible by 4"),
        ("data.sigma", d.sigma, d.sigma is None or (math.isfinite(d.sigma) and d.sigma > 0),
         "> 0 (or null for 5 * height / 256)"),
        ("data.flip_prob", d.flip_prob, 0 <= d.flip_prob <= 1, "a probability in [0, 1]"),
        ("data.batch_size", d.batch_size, d.batch_size >= 1, ">= 1"),
        ("data.workers", d.workers, d.workers >= 0, ">= 0"),
        ("data.max_pairs_per_epoch", d.max_pairs_per_epoch,
         d.max_pairs_per_epoch is None or d.max_pairs_per_epoch >= 1, ">= 1 (or null for all)"),
        ("data.val_identities", d.val_identities, 0 <= d.val_identities < 1,
         "a fraction in [0, 1) of the training identities"),
        ("optim.epochs", o.epochs, o.epochs >= 0, ">= 0"),
        ("optim.decay_epochs", o.decay_epochs, o.decay_epochs >= 0, ">= 0"),
        ("optim.grad_clip", o.grad_clip, o.grad_clip is None or (math.isfinite(o.grad_clip) and o.grad_clip > 0),
         "> 0 (or null for no clipping)"),
        ("log.sample_every", lg.sample_every, lg.sample_every >= 0, ">= 0 (0: no sample grids)"),
        ("log.sample_count", lg.sample_count, lg.sample_count >= 1, ">= 1"),
    ]
    for key, value, ok, want in checks:
        if not ok:
            raise ConfigError(f"{key}={value!r} is out of range: must be {want}")


def gen_to_dict(cfg: GenConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_gen_config(cfg: GenConfig, path: str | Path) -> None:
    save_typed_config(cfg, path)
